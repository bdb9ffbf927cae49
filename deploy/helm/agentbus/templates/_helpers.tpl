{{- define "agentbus.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentbus.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "agentbus.fullname" .)) -}}
{{- end -}}

{{- define "agentbus.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
