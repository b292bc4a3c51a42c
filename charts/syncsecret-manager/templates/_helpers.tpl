{{/* Names and labels. */}}
{{- define "syncsecret-manager.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "syncsecret-manager.fullname" -}}
{{- /* The tenant's own Role and RoleBinding in each tenant namespace are named syncsecret-ccm: the manager's there must not take that name. */}}
{{- if eq (include "syncsecret-manager.rawFullname" .) "syncsecret-ccm" -}}
{{- fail "the manager's fullname must not be syncsecret-ccm: its Role in each tenant namespace would replace the tenant's own (set fullnameOverride)" -}}
{{- end -}}
{{- include "syncsecret-manager.rawFullname" . -}}
{{- end -}}

{{- define "syncsecret-manager.rawFullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "syncsecret-manager.name" . -}}
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
{{- define "syncsecret-manager.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "syncsecret-manager.fullname" .) -}}
{{- end -}}

{{- define "syncsecret-manager.labels" -}}
app.kubernetes.io/name: {{ include "syncsecret-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "syncsecret-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncsecret-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /*
The pod template's labels: podLabels, then the selector labels over them
(a podLabels entry must not move the pod out of its Deployment's selector).
*/}}
{{- define "syncsecret-manager.podLabels" -}}
{{- $selector := include "syncsecret-manager.selectorLabels" . | fromYaml -}}
{{- toYaml (merge $selector (deepCopy .Values.podLabels)) -}}
{{- end -}}

{{/* The image: no default repository, since none is published yet; a
default in a registry namespace we do not hold would run whatever someone
else pushed there. */}}
{{- define "syncsecret-manager.image" -}}
{{ required "image.repository is required: no syncsecret image is published yet; build one with make image, push it to your registry and set image.repository (docs/install.md#images)" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
