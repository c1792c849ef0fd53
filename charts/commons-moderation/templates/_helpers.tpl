{{/* Labels every object of the release carries. */}}
{{- define "cm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* KServe labels a component's pods with the InferenceService name and "component". */}}
{{- define "cm.componentSelector" -}}
serving.kserve.io/inferenceservice: {{ .root.Values.inference.name }}
component: {{ .component }}
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

{{/* Knative autoscaling and Prometheus scraping, set per component (KServe copies a
component's annotations onto its Knative revision and pods). */}}
{{- define "cm.componentAnnotations" -}}
autoscaling.knative.dev/metric: {{ .autoscaling.metric | quote }}
autoscaling.knative.dev/target: {{ .autoscaling.target | quote }}
autoscaling.knative.dev/target-utilization-percentage: {{ .autoscaling.utilization_percent | quote }}
{{- if .monitoring }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
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
{{- dict "claim" $parts._0 "path" ($parts._1 | default "") | toJson -}}
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
