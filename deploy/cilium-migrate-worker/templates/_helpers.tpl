{{/* The name of every object: the release's name when it already says what it is. */}}
{{- define "worker.fullname" -}}
{{- if contains "cilium-migrate" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-cilium-migrate-worker" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "worker.selectorLabels" -}}
app.kubernetes.io/name: cilium-migrate-worker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "worker.labels" -}}
{{ include "worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
cilium-migrate.io/cluster: {{ .Values.clusterName }}
{{- end -}}

{{- define "worker.taskQueue" -}}
{{- .Values.temporal.taskQueue | default (printf "cilium-migrate.%s" .Values.clusterName) -}}
{{- end -}}

{{/* The worker's ServiceAccount as a binding subject. */}}
{{- define "worker.subject" -}}
- kind: ServiceAccount
  name: {{ include "worker.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
