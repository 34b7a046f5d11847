{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "tagger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name prefix. Component suffixes (up to "-controller-metrics",
19 characters) must still fit in 63, so the prefix is cut to 40.
*/}}
{{- define "tagger.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tagger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "tagger.labels" -}}
helm.sh/chart: {{ include "tagger.chart" . }}
{{ include "tagger.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tagger
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels shared by all components; add app.kubernetes.io/component.
*/}}
{{- define "tagger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of one component:
  include "tagger.componentLabels" (list . "controller")
*/}}
{{- define "tagger.componentLabels" -}}
{{ include "tagger.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tagger.componentSelectorLabels" -}}
{{ include "tagger.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
The tagger image: repository:tag, the tag defaulting to appVersion, and
@digest appended when a digest is set (the runtime pulls by the digest; the
tag stays for people reading the Pod).
*/}}
{{- define "tagger.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{- define "tagger.registry.image" -}}
{{- $img := .Values.registry.image }}
{{- $ref := printf "%s:%s" $img.repository ($img.tag | toString) }}
{{- if $img.digest }}
{{- printf "%s@%s" $ref $img.digest }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/* Component names. */}}
{{- define "tagger.controller.fullname" -}}
{{- printf "%s-controller" (include "tagger.fullname" .) }}
{{- end }}

{{- define "tagger.nodeAgent.fullname" -}}
{{- printf "%s-node-agent" (include "tagger.fullname" .) }}
{{- end }}

{{- define "tagger.registry.fullname" -}}
{{- printf "%s-registry" (include "tagger.fullname" .) }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "tagger.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "tagger.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tagger.nodeAgent.serviceAccountName" -}}
{{- if .Values.nodeAgent.serviceAccount.create }}
{{- default (include "tagger.nodeAgent.fullname" .) .Values.nodeAgent.serviceAccount.name }}
{{- else }}
{{- required "nodeAgent.serviceAccount.name is required when nodeAgent.serviceAccount.create is false" .Values.nodeAgent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tagger.registry.serviceAccountName" -}}
{{- if .Values.registry.serviceAccount.create }}
{{- default (include "tagger.registry.fullname" .) .Values.registry.serviceAccount.name }}
{{- else }}
{{- required "registry.serviceAccount.name is required when registry.serviceAccount.create is false" .Values.registry.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
URL the node agents read the bundled registry at.
*/}}
{{- define "tagger.registry.url" -}}
{{- if .Values.nodeAgent.registryURL }}
{{- .Values.nodeAgent.registryURL }}
{{- else if .Values.registry.enabled }}
{{- printf "http://%s.%s.svc:%v" (include "tagger.registry.fullname" .) .Release.Namespace .Values.registry.service.port }}
{{- end }}
{{- end }}

{{/*
The bundled registry's in-cluster host:port, as a Tag's image would name it.
*/}}
{{- define "tagger.registry.hostPort" -}}
{{- printf "%s.%s.svc:%v" (include "tagger.registry.fullname" .) .Release.Namespace .Values.registry.service.port }}
{{- end }}

{{/*
The port of a listen address ("127.0.0.1:9092", ":9091", "[::1]:9092"),
empty when it has none ("0" disables a server).
*/}}
{{- define "tagger.addrPort" -}}
{{- $a := toString . }}
{{- if regexMatch "^.*:[0-9]+$" $a }}
{{- regexReplaceAll "^.*:([0-9]+)$" $a "${1}" }}
{{- end }}
{{- end }}

{{/*
Where the kubelet reaches a listen address of a hostNetwork pod: its host, or
127.0.0.1 when it binds every address (":9092", "0.0.0.0:9092", "[::]:9092").
*/}}
{{- define "tagger.addrProbeHost" -}}
{{- $h := regexReplaceAll "^\\[?(.*?)\\]?:[0-9]+$" (toString .) "${1}" }}
{{- if has $h (list "" "0.0.0.0" "::") }}127.0.0.1{{ else }}{{ $h }}{{ end }}
{{- end }}

{{/*
The node agent's flags, as a YAML list. The container runs with them and the
uninstall hook's `node-agent cleanup --hold` gets the same ones (one flag
set), so the cleanup acts on the directory, mirror URL and patterns the agent
wrote with.
*/}}
{{- define "tagger.nodeAgent.args" -}}
{{- $n := .Values.nodeAgent }}
{{- $cri := "" }}
{{- with $n.containerdSocket }}
{{- $cri = printf "unix://%s" . }}
{{- end }}
{{- $args := list
  (printf "--listen=%s" $n.listen)
  (printf "--metrics-addr=%s" (toString $n.metricsAddr))
  (printf "--health-addr=%s" (toString $n.healthAddr))
  (printf "--hosts-dir=%s" $n.hostsDir)
  (printf "--containerd-config=%s" $n.containerdConfig)
  (printf "--cri-endpoint=%s" $cri) }}
{{- with include "tagger.registry.url" . }}
{{- $args = append $args (printf "--registry-url=%s" .) }}
{{- end }}
{{- if eq (include "tagger.registry.authEnabled" .) "true" }}
{{- $args = append $args (printf "--registry-token-file=%s" (include "tagger.registryAuth.tokenFile" .)) }}
{{- end }}
{{- $args = append $args (printf "--dial-timeout=%v" $n.dialTimeout) }}
{{- with $n.strictRegistries }}
{{- $args = append $args (printf "--strict-registries=%s" (join "," .)) }}
{{- end }}
{{- $plain := list }}
{{- if .Values.registry.enabled }}
{{- $plain = append $plain (include "tagger.registry.hostPort" .) }}
{{- end }}
{{- $plain = concat $plain ($n.plainHTTPRegistries | default list) | uniq }}
{{- with $plain }}
{{- $args = append $args (printf "--plain-http-registries=%s" (join "," .)) }}
{{- end }}
{{- $args = append $args (printf "--converge-workers=%v" $n.convergeWorkers) }}
{{- $args = append $args (printf "--ready-file=%s" (include "tagger.nodeAgent.readyFile" .)) }}
{{- $args = append $args (printf "--shutdown-delay=%v" $n.shutdownDelay) }}
{{- $args = append $args (printf "--log-format=%s" $n.logFormat) }}
{{- $args = append $args (printf "--log-level=%s" $n.logLevel) }}
{{- if $n.startupTaint.enabled }}
{{- $args = append $args (printf "--startup-taint=%s" $n.startupTaint.key) }}
{{- end }}
{{- $args = concat $args ($n.extraArgs | default list) }}
{{- toYaml $args }}
{{- end }}

{{/*
Where the node agent (and the cleanup hook's pods) keep their readiness
file: an emptyDir of the pod's own.
*/}}
{{- define "tagger.nodeAgent.stateDir" -}}/run/tagger-node-agent{{- end }}
{{- define "tagger.nodeAgent.readyFile" -}}{{ include "tagger.nodeAgent.stateDir" . }}/ready{{- end }}

{{/*
A node agent probe from values: unless the values give a handler, an exec of
`node-agent ready-check` on the pod's own readiness file (readiness: the file
says ready; liveness: the agent rewrote it within nodeAgent.livenessMaxAge,
ready or not). An HTTP probe could be answered by the other agent pod of a
rolling update through the shared port. With an httpGet handler, httpGet.host and httpGet.port are
filled in from nodeAgent.healthAddr unless set: a hostNetwork pod is probed at
the node IP by default, where a loopback-bound health server does not answer.
Called as (list $ probeValues "readiness"|"liveness").
*/}}
{{- define "tagger.nodeAgent.probe" -}}
{{- $root := index . 0 }}
{{- $probe := deepCopy (index . 1) }}
{{- $kind := index . 2 }}
{{- if not (or $probe.httpGet $probe.exec $probe.tcpSocket $probe.grpc) }}
{{- $cmd := list "/usr/local/bin/node-agent" "ready-check" (printf "--ready-file=%s" (include "tagger.nodeAgent.readyFile" $root)) }}
{{- if eq $kind "liveness" }}
{{- $cmd = concat $cmd (list "--live" (printf "--max-age=%v" $root.Values.nodeAgent.livenessMaxAge)) }}
{{- end }}
{{- $_ := set $probe "exec" (dict "command" $cmd) }}
{{- end }}
{{- $addr := toString $root.Values.nodeAgent.healthAddr }}
{{- with $probe.httpGet }}
{{- $port := include "tagger.addrPort" $addr }}
{{- if not $port }}
{{- fail (printf "nodeAgent.healthAddr=%q has no port: the kubelet probes /healthz and /readyz there (set host:port, e.g. 127.0.0.1:9092, or remove nodeAgent.livenessProbe and readinessProbe)" $addr) }}
{{- end }}
{{- if not (hasKey . "host") }}
{{- $_ := set . "host" (include "tagger.addrProbeHost" $addr) }}
{{- end }}
{{- if not (hasKey . "port") }}
{{- $_ := set . "port" (int $port) }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Registry settings checked once, where they are used: storage type, the
replica rule, required s3 fields.
*/}}
{{- define "tagger.registry.validate" -}}
{{- $r := .Values.registry }}
{{- if not (has $r.storage.type (list "filesystem" "s3")) }}
{{- fail (printf "registry.storage.type must be \"filesystem\" or \"s3\", got %q" (toString $r.storage.type)) }}
{{- end }}
{{- if lt (int $r.replicas) 1 }}
{{- fail (printf "registry.replicas must be at least 1, got %v" $r.replicas) }}
{{- end }}
{{- if and (gt (int $r.replicas) 1) (eq $r.storage.type "filesystem") }}
{{- fail (printf "registry.replicas=%v needs registry.storage.type=s3: filesystem storage lives on one volume and supports a single registry replica (set registry.replicas=1, or move to S3-compatible storage)" $r.replicas) }}
{{- end }}
{{- if and (gt (int $r.replicas) 1) (not $r.httpSecret.existingSecret) }}
{{- fail (printf "registry.replicas=%v needs registry.httpSecret.existingSecret: replicas must share one http.secret or uploads that cross replicas fail (kubectl -n %s create secret generic tagger-registry-http --from-literal=%s=\"$(openssl rand -hex 32)\")" $r.replicas .Release.Namespace $r.httpSecret.key) }}
{{- end }}
{{- if eq $r.storage.type "s3" }}
{{- if not $r.storage.s3.bucket }}
{{- fail "registry.storage.s3.bucket is required when registry.storage.type=s3" }}
{{- end }}
{{- if not $r.storage.s3.region }}
{{- fail "registry.storage.s3.region is required when registry.storage.type=s3 (any value, e.g. us-east-1, when regionendpoint names a non-AWS store)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the gc CronJob can run: a second pod must be able to open the store
while the registry serves (s3, or a ReadWriteMany volume).
*/}}
{{- define "tagger.registry.gcRuns" -}}
{{- $r := .Values.registry }}
{{- if and $r.enabled $r.gc.enabled (or (eq $r.storage.type "s3") (and $r.persistence.enabled (eq $r.persistence.accessMode "ReadWriteMany"))) }}true{{- end }}
{{- end }}

{{- define "tagger.registry.claimName" -}}
{{- default (include "tagger.registry.fullname" .) .Values.registry.persistence.existingClaim }}
{{- end }}

{{/*
Environment shared by the registry and its gc job: no trace exporter (the
registry otherwise keeps trying localhost:4318), the upload-state secret and
the s3 credentials.
*/}}
{{- define "tagger.registry.env" -}}
- name: OTEL_TRACES_EXPORTER
  value: none
{{- with .Values.registry.httpSecret.existingSecret }}
- name: REGISTRY_HTTP_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.registry.httpSecret.key }}
{{- end }}
{{- if and (eq .Values.registry.storage.type "s3") .Values.registry.storage.s3.existingSecret }}
- name: REGISTRY_STORAGE_S3_ACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.storage.s3.existingSecret }}
      key: {{ .Values.registry.storage.s3.accessKeyKey }}
- name: REGISTRY_STORAGE_S3_SECRETKEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.storage.s3.existingSecret }}
      key: {{ .Values.registry.storage.s3.secretKeyKey }}
{{- end }}
{{- end }}

{{/*
The node agent's tolerations, shared by the uninstall cleanup DaemonSet (it
must reach every node the agent ran on): nodeAgent.tolerations, plus the
startup taint, which waits for the agent pod itself, even when the list is
narrowed.
*/}}
{{- define "tagger.nodeAgent.tolerations" -}}
{{- $n := .Values.nodeAgent -}}
{{- if or $n.tolerations $n.startupTaint.enabled -}}
tolerations:
{{- with $n.tolerations }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $n.startupTaint.enabled }}
  - key: {{ $n.startupTaint.key }}
    operator: Exists
    effect: NoSchedule
{{- end }}
{{- end }}
{{- end }}

{{/*
Bundled registry authentication (pkg/controller/registryauth): on when the
bundled registry is and registry.auth.enabled.
*/}}
{{- define "tagger.registry.authEnabled" -}}
{{- and .Values.registry.enabled .Values.registry.auth.enabled }}
{{- end }}

{{- define "tagger.registryAuth.secretName" -}}
{{- default (printf "%s-auth" (include "tagger.registry.fullname" .)) .Values.registry.auth.existingSecret }}
{{- end }}

{{- define "tagger.registryAuth.serviceName" -}}
{{- printf "%s-registry-auth" (include "tagger.controller.fullname" .) }}
{{- end }}

{{/* The registry's realm: the controller's issuer behind its Service. */}}
{{- define "tagger.registryAuth.realm" -}}
{{- printf "http://%s.%s.svc:%v/token" (include "tagger.registryAuth.serviceName" .) .Release.Namespace .Values.registry.auth.port }}
{{- end }}

{{/* Where the audience-bound ServiceAccount token is projected. */}}
{{- define "tagger.registryAuth.tokenDir" -}}/var/run/secrets/tagger.dev/registry{{- end }}
{{- define "tagger.registryAuth.tokenFile" -}}{{ include "tagger.registryAuth.tokenDir" . }}/token{{- end }}

{{/* The projected token volume (controller and node agent pods). */}}
{{- define "tagger.registryAuth.tokenVolume" -}}
- name: registry-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.registry.auth.audience }}
          expirationSeconds: 3600
{{- end }}

{{/*
The one namespace pull Secrets are read from with pullSecrets.scope=namespace
(default: the release namespace); empty with scope=cluster. Fails on any
other scope.
*/}}
{{- define "tagger.pullSecrets.namespace" -}}
{{- $p := .Values.pullSecrets -}}
{{- if eq $p.scope "namespace" -}}
{{- default .Release.Namespace $p.namespace -}}
{{- else if ne $p.scope "cluster" -}}
{{- fail (printf "pullSecrets.scope=%q: want namespace (pull Secrets in one namespace) or cluster (any namespace)" $p.scope) -}}
{{- end -}}
{{- end }}
