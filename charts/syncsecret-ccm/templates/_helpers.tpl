{{/* Names and labels. */}}
{{- define "syncsecret-ccm.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "syncsecret-ccm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "syncsecret-ccm.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /*
The ServiceAccount the pod runs as (and every RoleBinding binds):
serviceAccount.name, else the fullname.
*/}}
{{- define "syncsecret-ccm.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "syncsecret-ccm.fullname" .) -}}
{{- end -}}

{{- define "syncsecret-ccm.labels" -}}
app.kubernetes.io/name: {{ include "syncsecret-ccm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "syncsecret-ccm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncsecret-ccm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /*
The pod template's labels: podLabels, then the selector labels over them
(a podLabels entry must not move the pod out of its Deployment's selector).
*/}}
{{- define "syncsecret-ccm.podLabels" -}}
{{- $selector := include "syncsecret-ccm.selectorLabels" . | fromYaml -}}
{{- toYaml (merge $selector (deepCopy .Values.podLabels)) -}}
{{- end -}}

{{/* The image: no default repository, since none is published yet; a
default in a registry namespace we do not hold would run whatever someone
else pushed there. */}}
{{- define "syncsecret-ccm.image" -}}
{{ required "image.repository is required: no syncsecret image is published yet; build one with make image, push it to your registry and set image.repository (docs/install.md#images)" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
