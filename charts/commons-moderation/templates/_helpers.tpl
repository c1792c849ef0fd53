{{/* Labels every object of the release carries. */}}
{{- define "cm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The shared Triton's InferenceService; its predictor's Knative service is <this>-predictor. */}}
{{- define "cm.tritonName" -}}
{{- printf "%s-triton" .Values.inference.name -}}
{{- end }}

{{/* Served model names, sorted (Helm ranges over maps in key order too). */}}
{{- define "cm.servedNames" -}}
{{- keys .Values.inference_services | sortAlpha | toJson -}}
{{- end }}

{{/* A dated model directory: s3:// or pvc://, ending in /<YYYYMMDDhhmmss>/. */}}
{{- define "cm.datedUri" -}}
^(s3|pvc)://[^/]+/.+/[0-9]{14}/?$
{{- end }}

{{/* Each served model's predictor: inference.predictor with the model's block over it (image,
image_version, config, container, autoscaling), the model's custom_env appended to the
generic env. STORAGE_URI is taken out of the env: it is the model's directory in Triton. */}}
{{- define "cm.servedModels" -}}
{{- $generic := .Values.inference.predictor -}}
{{- $models := list -}}
{{- range $name, $service := .Values.inference_services -}}
{{- $own := $service.predictor | default dict -}}
{{- $storage := "" -}}
{{- $env := list -}}
{{- range $own.custom_env | default list -}}
{{- if eq .name "STORAGE_URI" -}}
{{- if not (regexMatch (include "cm.datedUri" $) .value) -}}
{{- fail (printf "inference_services.%s: STORAGE_URI %q must be a dated model directory, s3:// or pvc://, ending in /<YYYYMMDDhhmmss>/" $name .value) -}}
{{- end -}}
{{- $storage = .value -}}
{{- else -}}
{{- $env = append $env . -}}
{{- end -}}
{{- end -}}
{{- $model := dict
  "name" $name
  "image" ($own.image | default $generic.image)
  "version" (toString ($own.image_version | default $generic.version))
  "registry" ($generic.registry | default "")
  "config" (mergeOverwrite (deepCopy ($generic.config | default dict)) ($own.config | default dict))
  "container" (mergeOverwrite (deepCopy $generic.container) ($own.container | default dict))
  "autoscaling" (mergeOverwrite (deepCopy $generic.autoscaling) ($own.autoscaling | default dict))
  "admission" (mergeOverwrite (deepCopy $generic.admission) ($own.admission | default dict))
  "base_env" (concat ($generic.base_env | default list) ($generic.custom_env | default list))
  "custom_env" $env
  "storage_uri" $storage -}}
{{- $models = append $models $model -}}
{{- end -}}
{{- toJson $models -}}
{{- end }}

{{/* Triton's model repository: {name, uri} for every served model with a STORAGE_URI. */}}
{{- define "cm.tritonModels" -}}
{{- $repository := list -}}
{{- range include "cm.servedModels" . | fromJsonArray -}}
{{- if .storage_uri -}}
{{- $repository = append $repository (dict "name" .name "uri" .storage_uri) -}}
{{- end -}}
{{- end -}}
{{- if not $repository -}}
{{- fail "no served model names a STORAGE_URI: Triton would have no model to serve" -}}
{{- end -}}
{{- toJson $repository -}}
{{- end }}

{{/* NetworkPolicy pod selectors, by the labels KServe gives each InferenceService's pods. */}}
{{- define "cm.modelServerSelector" -}}
matchLabels:
  component: predictor
matchExpressions:
  - key: serving.kserve.io/inferenceservice
    operator: In
    values:
      {{- range include "cm.servedNames" . | fromJsonArray }}
      - {{ . }}
      {{- end }}
{{- end }}

{{- define "cm.tritonSelector" -}}
matchLabels:
  serving.kserve.io/inferenceservice: {{ include "cm.tritonName" . }}
  component: predictor
{{- end }}

{{/* <registry>/<image>:<version>; a service may name its own registry (upstream Triton does). */}}
{{- define "cm.image" -}}
{{- $registry := .service.registry | default .root.Values.docker.registry -}}
{{- printf "%s/%s:%s" $registry .service.image (toString .service.version) -}}
{{- end }}

{{/* base_env then custom_env (Wikimedia's convention) as name/value pairs, values quoted so
they stay strings; names the chart sets itself are refused. */}}
{{- define "cm.userEnv" -}}
{{- range concat (.service.base_env | default list) (.service.custom_env | default list) }}
{{- if has .name $.managed }}
{{- fail (printf "%s is set by the chart; change it through its own value, not base_env/custom_env" .name) }}
{{- end }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/* Hardened container: non-root, no privilege escalation, no capabilities, read-only root. */}}
{{- define "cm.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Knative autoscaling and KServe's scraping, set per component (KServe copies a
component's annotations onto its pods). With both KServe annotations on, KServe's pod
webhook has the queue-proxy scrape the app's port and path and serve that together with its
own metrics on one port, and points the pod's prometheus.io/* annotations there: the app's
port alone would miss the queue-proxy's request counts, latencies and queue depth. */}}
{{- define "cm.componentAnnotations" -}}
autoscaling.knative.dev/metric: {{ .autoscaling.metric | quote }}
autoscaling.knative.dev/target: {{ .autoscaling.target | quote }}
autoscaling.knative.dev/target-utilization-percentage: {{ .autoscaling.utilization_percent | quote }}
serving.kserve.io/enable-prometheus-scraping: {{ .monitoring | quote }}
serving.kserve.io/enable-metric-aggregation: {{ .monitoring | quote }}
{{- if .monitoring }}
prometheus.kserve.io/port: {{ .metricsPort | quote }}
prometheus.kserve.io/path: /metrics
{{- end }}
{{- end }}

{{/* The schema bounds each replica count; only a template can compare the two. */}}
{{- define "cm.checkReplicas" -}}
{{- $config := .config | default dict }}
{{- if and (hasKey $config "minReplicas") (hasKey $config "maxReplicas") }}
{{- if gt (int $config.minReplicas) (int $config.maxReplicas) }}
{{- fail (printf "%s: config.minReplicas exceeds config.maxReplicas" .component) }}
{{- end }}
{{- end }}
{{- end }}

{{/* pvc://<claim>/<path> → dict(claim, path). */}}
{{- define "cm.pvc" -}}
{{- $parts := splitn "/" 2 (trimPrefix "pvc://" .) -}}
{{- dict "claim" $parts._0 "path" ($parts._1 | default "" | trimSuffix "/") | toJson -}}
{{- end }}

{{/* NetworkPolicy egress rules: to a CIDR (Wikimedia's dst_nets shape) or to labelled pods
of a namespace, on the listed ports. */}}
{{- define "cm.ports" -}}
ports:
  {{- range . }}
  - port: {{ .port }}
    protocol: {{ .protocol }}
  {{- end }}
{{- end }}

{{- define "cm.netRule" -}}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
  {{- include "cm.ports" .ports | nindent 2 }}
{{- end }}

{{- define "cm.peerRule" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .pod_labels | nindent 10 }}
  {{- include "cm.ports" .ports | nindent 2 }}
{{- end }}
