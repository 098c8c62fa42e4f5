{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "gristmill.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name: "<release>" if it already contains the chart name, else "<release>-gristmill". */}}
{{- define "gristmill.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "gristmill.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gristmill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "gristmill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gristmill.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of one service: (dict "root" $ "service" "worker") -> "<repository>-worker:<tag>". */}}
{{- define "gristmill.image" -}}
{{- printf "%s-%s:%s" .root.Values.image.repository .service (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* The database DSN, from the existing Secret. */}}
{{- define "gristmill.env.database" -}}
- name: GRISTMILL_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- end -}}

{{/* Kafka settings (services that use the bus). */}}
{{- define "gristmill.env.kafka" -}}
- name: GRISTMILL_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" .Values.kafka.bootstrap | quote }}
- name: GRISTMILL_KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
{{- if .Values.kafka.topicPrefix }}
- name: GRISTMILL_KAFKA_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
{{- end }}
{{- end -}}

{{/* The master key (callers check that masterKey.existingSecret is set). */}}
{{- define "gristmill.env.masterKey" -}}
- name: GRISTMILL_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.masterKey.existingSecret }}
      key: {{ .Values.masterKey.key }}
{{- end -}}

{{/* Logging, then the chart-wide `env`, then one service's `env`: (dict "root" $ "env" .Values.worker.env). */}}
{{- define "gristmill.env.common" -}}
- name: GRISTMILL_LOG_FORMAT
  value: json
{{- range $name, $value := .root.Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range $name, $value := .env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every pod. */}}
{{- define "gristmill.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A writable /tmp (root filesystems are read-only). */}}
{{- define "gristmill.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
{{- define "gristmill.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}
