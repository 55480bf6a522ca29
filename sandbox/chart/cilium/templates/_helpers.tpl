{{/*
Helpers for the sandbox stand-in chart. Written for the sandbox; the naming
rules mirror the real chart's helpers (templates/_helpers.tpl and
templates/cilium-operator/_helpers.tpl).
*/}}

{{/*
Agent image: "<repository>:<tag>", plus "@<digest>" when useDigest is set and a
digest is given. image.override replaces the whole reference.
Usage: include "cilium.image" .Values.image
*/}}
{{- define "cilium.image" -}}
{{- if .override -}}
{{- .override -}}
{{- else -}}
{{- $digest := "" -}}
{{- if and .useDigest .digest -}}
{{- $digest = printf "@%s" .digest -}}
{{- end -}}
{{- printf "%s:%s%s" .repository .tag $digest -}}
{{- end -}}
{{- end -}}

{{/*
Operator image. The real chart builds "<repository>-<cloud><suffix>:<tag>"
where <cloud> is "generic" unless a cloud IPAM (eni, azure, alibabacloud) is
enabled; the sandbox only models the generic operator. With the default values
that is "quay.io/cilium/operator-generic-ci:latest".
Usage: include "cilium.operator.image" .
*/}}
{{- define "cilium.operator.image" -}}
{{- $img := .Values.operator.image -}}
{{- if $img.override -}}
{{- $img.override -}}
{{- else -}}
{{- $digest := "" -}}
{{- if and $img.useDigest $img.genericDigest -}}
{{- $digest = printf "@%s" $img.genericDigest -}}
{{- end -}}
{{- printf "%s-generic%s:%s%s" $img.repository ($img.suffix | default "") $img.tag $digest -}}
{{- end -}}
{{- end -}}

{{/*
sha256 of the rendered cilium-config ConfigMap, for the pod-template
annotation that makes a config change roll the pods.
Usage: include "cilium.configChecksum" .
*/}}
{{- define "cilium.configChecksum" -}}
{{- include (print .Template.BasePath "/cilium-configmap.yaml") . | sha256sum -}}
{{- end -}}
