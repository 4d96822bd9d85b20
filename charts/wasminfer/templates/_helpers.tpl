{{/* Names, labels and image references shared by the templates. */}}

{{- define "wasminfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wasminfer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "wasminfer.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "wasminfer.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "wasminfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasminfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "wasminfer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "wasminfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: wasminfer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "wasminfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wasminfer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion; a digest wins over both. */}}
{{- define "wasminfer.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when watchNamespaces holds a pattern (team-*, !kube-*): the namespaces are not known
in advance, so access is granted cluster-wide and the operator filters. */}}
{{- define "wasminfer.namespacePatterns" -}}
{{- $found := false }}
{{- range .Values.watchNamespaces }}
{{- if regexMatch "[*?!]" . }}{{ $found = true }}{{ end }}
{{- end }}
{{- $found }}
{{- end }}

{{- define "wasminfer.leaseName" -}}
{{- default (include "wasminfer.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The namespaced API access of the operator (see rbac.yaml). */}}
{{- define "wasminfer.workloadRules" -}}
- apiGroups: ["wasminfer.dev"]
  resources: ["wasmworkers", "inferencemodels", "modelpools"]
  verbs: ["list", "watch"]
- apiGroups: ["wasminfer.dev"]
  resources: ["inferencemodels"]
  verbs: ["get", "patch"]
- apiGroups: ["wasminfer.dev"]
  resources: ["wasmworkers/status", "inferencemodels/status", "modelpools/status"]
  verbs: ["patch"]
# Children owned with blockOwnerDeletion: a worker's, a model's model servers (spec.serving), a pool's replicas.
- apiGroups: ["wasminfer.dev"]
  resources: ["wasmworkers/finalizers", "inferencemodels/finalizers", "modelpools/finalizers"]
  verbs: ["update"]
# delete: a model's model servers once spec.serving is removed, a pool's replicas once it has no models.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# The pull Secret an OCI source names: read to resolve its tag and check its signature.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
