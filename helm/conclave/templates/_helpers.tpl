{{/*
Names, labels, the checks of values that a JSON schema cannot express, where
each secret comes from, and the homeserver's configuration rendered as TOML.
*/}}

{{- define "conclave.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-conclave, or the release name when it already says conclave. */}}
{{- define "conclave.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "conclave.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conclave.labels" -}}
helm.sh/chart: {{ include "conclave.chart" . }}
app.kubernetes.io/name: {{ include "conclave.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: conclave
{{- end }}

{{/* The labels that select the homeserver's pods (and nothing else: the
migration Job's pod has another component). */}}
{{- define "conclave.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conclave.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: homeserver
{{- end }}

{{- define "conclave.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conclave.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conclave.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the configuration file and the mounted secrets are in the pod. */}}
{{- define "conclave.configPath" -}}/etc/conclave/config/conclave-homeserver.toml{{- end }}

{{/* terminationGracePeriodSeconds: the preStop sleep, then the homeserver's
own shutdown deadline, then a margin for the process to exit after it. */}}
{{- define "conclave.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (int .Values.shutdown.deadlineSeconds) 10 }}
{{- end }}

{{/* ---------------------------------------------------------------- Secrets */}}

{{- define "conclave.redis.enabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{- end }}
{{- end }}

{{- define "conclave.database.secretName" -}}
{{- default (include "conclave.fullname" .) .Values.database.existingSecret }}
{{- end }}

{{- define "conclave.database.secretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{- define "conclave.redis.secretName" -}}
{{- default (include "conclave.fullname" .) .Values.redis.existingSecret }}
{{- end }}

{{- define "conclave.redis.secretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{/* The chart makes the Secret <fullname> when a URL comes from values. */}}
{{- define "conclave.urlSecret.enabled" -}}
{{- if or (and .Values.database.url (not .Values.database.existingSecret)) (and .Values.redis.url (not .Values.redis.existingSecret)) }}true{{- end }}
{{- end }}

{{- define "conclave.clientTls.secretName" -}}
{{- default (printf "%s-client-tls" (include "conclave.fullname" .)) .Values.clientApi.tls.existingSecret }}
{{- end }}

{{- define "conclave.federation.secretName" -}}
{{- default (printf "%s-federation-tls" (include "conclave.fullname" .)) .Values.federation.certificate.existingSecret }}
{{- end }}

{{- define "conclave.trustRoots.secretName" -}}
{{- default (printf "%s-federation-trust" (include "conclave.fullname" .)) .Values.federation.trustRoots.existingSecret }}
{{- end }}

{{- define "conclave.trustRoots.secretKey" -}}
{{- if .Values.federation.trustRoots.existingSecret }}{{ .Values.federation.trustRoots.existingSecretKey }}{{ else }}ca.crt{{ end }}
{{- end }}

{{/* ------------------------------------------------------- Checks of values */}}

{{/* How many of the given sources are set: each secret must come from exactly
one place. */}}
{{- define "conclave.checkOneSource" -}}
{{- $set := list }}
{{- range $name, $isSet := .sources }}{{ if $isSet }}{{ $set = append $set $name }}{{ end }}{{ end }}
{{- if ne (len $set) 1 }}
{{- fail (printf "%s needs exactly one source, got %d: set one of %s (now set: %s)" .what (len $set) (keys .sources | sortAlpha | join ", ") (default "none" ($set | sortAlpha | join ", "))) }}
{{- end }}
{{- end }}

{{- define "conclave.validate" -}}
{{- $v := .Values }}
{{- if not $v.domain }}
{{- fail "domain is required: the domain this homeserver is the authority for (--set domain=a.example)" }}
{{- end }}
{{- if and $v.database.url $v.database.existingSecret }}
{{- fail "database.url and database.existingSecret are both set: give the database URL one way" }}
{{- end }}
{{- if not (or $v.database.url $v.database.existingSecret) }}
{{- fail "a database is required: set database.url (postgres://...) or database.existingSecret (a Secret whose key database.existingSecretKey holds the URL)" }}
{{- end }}
{{- if and $v.redis.url $v.redis.existingSecret }}
{{- fail "redis.url and redis.existingSecret are both set: give the Redis URL one way" }}
{{- end }}
{{- if $v.clientApi.tls.enabled }}
{{- include "conclave.checkOneSource" (dict "what" "clientApi.tls (enabled)" "sources" (dict "clientApi.tls.existingSecret" (not (empty $v.clientApi.tls.existingSecret)) "clientApi.tls.certificate+privateKey" (or (not (empty $v.clientApi.tls.certificate)) (not (empty $v.clientApi.tls.privateKey))) "clientApi.tls.certManager.enabled" $v.clientApi.tls.certManager.enabled)) }}
{{- if and (or $v.clientApi.tls.certificate $v.clientApi.tls.privateKey) (not (and $v.clientApi.tls.certificate $v.clientApi.tls.privateKey)) }}
{{- fail "clientApi.tls.certificate and clientApi.tls.privateKey go together: set both" }}
{{- end }}
{{- if and $v.clientApi.tls.certManager.enabled (not $v.clientApi.tls.certManager.issuerRef.name) }}
{{- fail "clientApi.tls.certManager.issuerRef.name is required: the cert-manager Issuer or ClusterIssuer of the client certificate" }}
{{- end }}
{{- end }}
{{- if and $v.federation.peers (not $v.federation.enabled) }}
{{- fail "federation.peers is set but federation.enabled is false: enable federation (with its certificate and trust roots) or remove the peers" }}
{{- end }}
{{- if $v.federation.enabled }}
{{- $certificate := $v.federation.certificate }}
{{- include "conclave.checkOneSource" (dict "what" "federation.certificate" "sources" (dict "federation.certificate.existingSecret" (not (empty $certificate.existingSecret)) "federation.certificate.certificate+privateKey" (or (not (empty $certificate.certificate)) (not (empty $certificate.privateKey))) "federation.certificate.certManager.enabled" $certificate.certManager.enabled)) }}
{{- if and (or $certificate.certificate $certificate.privateKey) (not (and $certificate.certificate $certificate.privateKey)) }}
{{- fail "federation.certificate.certificate and federation.certificate.privateKey go together: set both" }}
{{- end }}
{{- if and $certificate.certManager.enabled (not $certificate.certManager.issuerRef.name) }}
{{- fail "federation.certificate.certManager.issuerRef.name is required: the cert-manager Issuer or ClusterIssuer of the federation certificate" }}
{{- end }}
{{- include "conclave.checkOneSource" (dict "what" "federation.trustRoots" "sources" (dict "federation.trustRoots.existingSecret" (not (empty $v.federation.trustRoots.existingSecret)) "federation.trustRoots.caCertificates" (not (empty $v.federation.trustRoots.caCertificates)))) }}
{{- range $domain, $peer := $v.federation.peers }}
{{- if not (regexMatch "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" $domain) }}
{{- fail (printf "federation.peers has the key %q, which is not a domain: lowercase letters, digits and hyphens in dot-separated labels, e.g. b.example" $domain) }}
{{- end }}
{{- end }}
{{- if hasKey $v.federation.peers $v.domain }}
{{- fail (printf "federation.peers lists %s, this homeserver's own domain: list other domains only" $v.domain) }}
{{- end }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- range $name := list "service.name" "service.version" "service.instance.id" "conclave.domain" }}
{{- if hasKey $v.telemetry.resourceAttributes $name }}
{{- fail (printf "telemetry.resourceAttributes names %q, which the server sets itself (from telemetry.serviceName, its version, the pod's name and the domain): set those instead" $name) }}
{{- end }}
{{- end }}
{{- if and $v.clientApi.ingress.enabled $v.clientApi.tls.enabled }}
{{- fail "clientApi.ingress.enabled with clientApi.tls.enabled: the Ingress ends client TLS itself and reaches the pods over plain HTTP/2; turn one of them off" }}
{{- end }}
{{- if and (has $v.clientApi.service.type (list "LoadBalancer" "NodePort")) (not $v.clientApi.tls.enabled) (not $v.clientApi.service.allowPlaintext) }}
{{- fail (printf "clientApi.service.type %s without clientApi.tls.enabled would expose the client API's plaintext gRPC (passwords, tokens) outside the cluster: enable clientApi.tls, or set clientApi.service.allowPlaintext when the load balancer itself ends TLS" $v.clientApi.service.type) }}
{{- end }}
{{- range $key, $_ := $v.podLabels }}
{{- if or (hasPrefix "app.kubernetes.io/" $key) (eq $key "helm.sh/chart") }}
{{- fail (printf "podLabels has %q, a label the chart sets itself (and selects the pods by): choose another key" $key) }}
{{- end }}
{{- end }}
{{- if $v.networkPolicy.enabled }}
{{- include "conclave.validate.urlPort" (dict "what" "database.url" "url" $v.database.url "default" 5432 "port" $v.networkPolicy.egress.databasePort "value" "networkPolicy.egress.databasePort") }}
{{- include "conclave.validate.urlPort" (dict "what" "redis.url" "url" $v.redis.url "default" 6379 "port" $v.networkPolicy.egress.redisPort "value" "networkPolicy.egress.redisPort") }}
{{- end }}
{{- end }}

{{/* A URL given in the values must use the port the NetworkPolicy lets out
(a URL from an existing Secret cannot be read here). */}}
{{- define "conclave.validate.urlPort" -}}
{{- if .url }}
{{- $authority := regexReplaceAll "^[a-z0-9+.-]+://" .url "" | splitList "/" | first | splitList "@" | last }}
{{- $port := regexFind ":[0-9]+$" $authority | trimPrefix ":" }}
{{- $port = ternary (toString .default) $port (eq $port "") }}
{{- if ne $port (toString (int .port)) }}
{{- fail (printf "%s uses port %s but %s is %d: the NetworkPolicy would block it; set %s to %s" .what $port .value (int .port) .value $port) }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------- Configuration */}}

{{/* The homeserver's configuration as a dict with the TOML's names. No secret
goes in: the URLs come as environment variables from Secrets, and the TLS
material as files of mounted Secrets. */}}
{{- define "conclave.config" -}}
{{- $v := .Values }}
{{- $clientApi := dict "listen" (printf "0.0.0.0:%d" (int $v.ports.client)) "max_message_bytes" $v.clientApi.maxMessageBytes }}
{{- if $v.clientApi.tls.enabled }}
{{- $_ := set $clientApi "tls_certificate" "/etc/conclave/client-tls/tls.crt" }}
{{- $_ := set $clientApi "tls_private_key" "/etc/conclave/client-tls/tls.key" }}
{{- else }}
{{- $_ := set $clientApi "behind_tls_proxy" true }}
{{- end }}
{{- $federation := dict
    "listen" (printf "0.0.0.0:%d" (int $v.ports.federation))
    "max_message_bytes" $v.federation.maxMessageBytes
    "peer_requests_per_minute" $v.federation.peerRequestsPerMinute
    "call_timeout_seconds" $v.federation.callTimeoutSeconds
    "outbox_batch_size" $v.federation.outboxBatchSize }}
{{- if $v.federation.enabled }}
{{- $_ := set $federation "certificate" "/etc/conclave/federation/tls.crt" }}
{{- $_ := set $federation "private_key" "/etc/conclave/federation/tls.key" }}
{{- $_ := set $federation "trust_roots" "/etc/conclave/federation-trust/ca.crt" }}
{{- $peers := dict }}
{{- range $domain, $peer := $v.federation.peers }}
{{- $entry := dict "endpoint" $peer.endpoint }}
{{- if $peer.pinnedSha256 }}{{ $_ := set $entry "pinned_sha256" $peer.pinnedSha256 }}{{ end }}
{{- $_ := set $peers $domain $entry }}
{{- end }}
{{- if $peers }}{{ $_ := set $federation "peers" $peers }}{{ end }}
{{- end }}
{{- $limits := dict
    "auth_attempts_per_minute" $v.limits.authAttemptsPerMinute
    "auth_attempt_burst" $v.limits.authAttemptBurst
    "login_failures_before_backoff" $v.limits.loginFailuresBeforeBackoff
    "login_backoff_initial_seconds" $v.limits.loginBackoffInitialSeconds
    "login_backoff_max_seconds" $v.limits.loginBackoffMaxSeconds
    "call_deadline_seconds" $v.limits.callDeadlineSeconds
    "subscribe_streams_per_device" $v.limits.subscribeStreamsPerDevice
    "subscribe_streams_per_connection" $v.limits.subscribeStreamsPerConnection
    "http2_max_concurrent_streams" $v.limits.http2MaxConcurrentStreams
    "http2_max_header_list_size" $v.limits.http2MaxHeaderListSize
    "http2_keepalive_interval_seconds" $v.limits.http2KeepaliveIntervalSeconds
    "http2_keepalive_timeout_seconds" $v.limits.http2KeepaliveTimeoutSeconds
    "tcp_keepalive_seconds" $v.limits.tcpKeepaliveSeconds }}
{{- $telemetry := dict
    "metrics" $v.telemetry.metrics
    "refresh_interval_ms" $v.telemetry.refreshIntervalMs
    "sampling_ratio" $v.telemetry.samplingRatio
    "service_name" $v.telemetry.serviceName
    "trust_client_trace_context" $v.telemetry.trustClientTraceContext }}
{{- if $v.telemetry.otlpEndpoint }}{{ $_ := set $telemetry "otlp_endpoint" $v.telemetry.otlpEndpoint }}{{ end }}
{{- if $v.telemetry.resourceAttributes }}{{ $_ := set $telemetry "resource_attributes" $v.telemetry.resourceAttributes }}{{ end }}
{{- $config := dict
    "domain" $v.domain
    "database" (dict "max_connections" $v.database.maxConnections)
    "client_api" $clientApi
    "http" (dict "listen" (printf "0.0.0.0:%d" (int $v.ports.http)))
    "registration" (dict "policy" $v.registration.policy)
    "key_packages" (dict
      "max_lifetime_days" $v.keyPackages.maxLifetimeDays
      "max_per_upload" $v.keyPackages.maxPerUpload
      "claims_per_minute" $v.keyPackages.claimsPerMinute
      "low_stock_threshold" $v.keyPackages.lowStockThreshold
      "low_stock_active_days" $v.keyPackages.lowStockActiveDays)
    "groups" (dict
      "past_epoch_window" $v.groups.pastEpochWindow
      "max_members" $v.groups.maxMembers
      "retention_days" $v.groups.retentionDays)
    "federation" $federation
    "limits" $limits
    "shutdown" (dict "deadline_seconds" $v.shutdown.deadlineSeconds)
    "redis" (dict "key_prefix" $v.redis.keyPrefix "poll_interval_ms" $v.redis.pollIntervalMs)
    "leases" (dict "ttl_ms" $v.leases.ttlMs "renew_interval_ms" $v.leases.renewIntervalMs)
    "telemetry" $telemetry
    "admin" (dict
      "enabled" $v.admin.enabled
      "behind_tls_proxy" $v.admin.behindTlsProxy
      "session_idle_minutes" $v.admin.sessionIdleMinutes
      "session_max_hours" $v.admin.sessionMaxHours)
    "log" (dict "format" $v.log.format "filter" $v.log.filter) }}
{{- $extra := deepCopy (default dict $v.extraConfig) }}
{{- if and (kindIs "map" $extra.database) (hasKey $extra.database "url") }}
{{- fail "extraConfig.database.url would put the database URL (a secret) in the ConfigMap: use database.url or database.existingSecret" }}
{{- end }}
{{- if and (kindIs "map" $extra.redis) (hasKey $extra.redis "url") }}
{{- fail "extraConfig.redis.url would put the Redis URL (a secret) in the ConfigMap: use redis.url or redis.existingSecret" }}
{{- end }}
{{- include "conclave.config.refuseOverlap" (dict "extra" $extra "chart" $config "path" "extraConfig") }}
{{- toJson (mustMergeOverwrite $config $extra) }}
{{- end }}

{{/* Fails when extraConfig sets a key the chart renders from a value: two
places for one setting would leave one silently ignored. */}}
{{- define "conclave.config.refuseOverlap" -}}
{{- $chart := .chart }}
{{- $path := .path }}
{{- range $key, $value := .extra }}
{{- if hasKey $chart $key }}
{{- $mine := index $chart $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $mine) }}
{{- include "conclave.config.refuseOverlap" (dict "extra" $value "chart" $mine "path" (printf "%s.%s" $path $key)) }}
{{- else }}
{{- fail (printf "%s.%s is rendered by the chart from a value: set that value instead (values.yaml documents each one)" $path $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A TOML key: bare when it can be, else a quoted string (peer domains). */}}
{{- define "conclave.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* A TOML value. JSON strings, numbers, booleans and arrays of them are valid
TOML; numbers from values are whole or decimal as written. */}}
{{- define "conclave.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ toJson . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}{{ toJson . }}
{{- else if kindIs "slice" . }}[{{ range $index, $item := . }}{{ if $index }}, {{ end }}{{ include "conclave.toml.value" $item }}{{ end }}]
{{- else }}{{ fail (printf "cannot write %v (a %s) in the TOML configuration" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* A TOML table: its plain keys, then its sub-tables with their dotted
headers. `path` is the list of (rendered) keys leading to it. */}}
{{- define "conclave.toml.table" -}}
{{- $path := .path }}
{{- range $key, $value := .table }}
{{- if and (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) }}
{{ include "conclave.toml.key" $key }} = {{ include "conclave.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{- $inner := append $path (include "conclave.toml.key" $key) }}
{{- $plainKeys := 0 }}
{{- range $value }}{{ if not (kindIs "map" .) }}{{ $plainKeys = add1 $plainKeys }}{{ end }}{{ end }}
{{- /* A table of tables only (federation.peers) needs no header of its own. */}}
{{- if or $plainKeys (not $value) }}

[{{ join "." $inner }}]
{{- end }}
{{- include "conclave.toml.table" (dict "path" $inner "table" $value) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "conclave.toml" -}}
# conclave-homeserver configuration rendered by the Helm chart {{ include "conclave.chart" . }}.
# Secrets are not here: CONCLAVE_DATABASE__URL (and CONCLAVE_REDIS__URL) come
# from Secrets as environment variables, and TLS material from mounted Secrets.
{{- include "conclave.toml.table" (dict "path" list "table" (include "conclave.config" . | fromJson)) }}
{{ end }}

{{/* ------------------------------------------------------ Pod spec pieces */}}

{{- define "conclave.env" -}}
- name: CONCLAVE_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conclave.database.secretName" . }}
      key: {{ include "conclave.database.secretKey" . }}
{{- if include "conclave.redis.enabled" . }}
- name: CONCLAVE_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conclave.redis.secretName" . }}
      key: {{ include "conclave.redis.secretKey" . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "conclave.volumeMounts" -}}
- name: config
  mountPath: /etc/conclave/config
  readOnly: true
{{- if .Values.clientApi.tls.enabled }}
- name: client-tls
  mountPath: /etc/conclave/client-tls
  readOnly: true
{{- end }}
{{- if .Values.federation.enabled }}
- name: federation
  mountPath: /etc/conclave/federation
  readOnly: true
- name: federation-trust
  mountPath: /etc/conclave/federation-trust
  readOnly: true
{{- end }}
{{- end }}

{{- define "conclave.volumes" -}}
- name: config
  configMap:
    name: {{ include "conclave.fullname" . }}-config
{{- if .Values.clientApi.tls.enabled }}
- name: client-tls
  secret:
    secretName: {{ include "conclave.clientTls.secretName" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if .Values.federation.enabled }}
- name: federation
  secret:
    secretName: {{ include "conclave.federation.secretName" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
- name: federation-trust
  secret:
    secretName: {{ include "conclave.trustRoots.secretName" . }}
    defaultMode: 0444
    items:
      - key: {{ include "conclave.trustRoots.secretKey" . }}
        path: ca.crt
{{- end }}
{{- end }}
