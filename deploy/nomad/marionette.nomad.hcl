# Marionette on Nomad: Redis and every stage that runs in a container, one group each.
#
#   marionette redis-acl --new-env > deploy/.env       # secrets, once
#   nomad var put nomad/jobs/marionette $(grep -v '^#' deploy/.env)
#   nomad job run deploy/nomad/marionette.nomad.hcl
#
# The image is deploy/Dockerfile's (`docker build -t marionette:latest -f deploy/Dockerfile .`
# on every client, or push it to a registry and set -var image=...). Services use Nomad's own
# discovery (Nomad 1.4 or later); Redis keeps its data in the client host volume
# `marionette-redis`. The `scaling` blocks are for the Nomad Autoscaler with its Prometheus
# plugin; deploy/nomad/README.md says more.

variable "image" {
  type        = string
  default     = "marionette:latest"
  description = "The Marionette image (deploy/Dockerfile)."
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "marionette" {
  datacenters = var.datacenters
  type        = "service"

  # One allocation at a time, each healthy (its /readyz check passing) before the next.
  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    auto_revert      = true
  }

  # Redis for the bus, as in deploy/docker-compose.yml: append-only with an fsync on every
  # write, a user per stage (services/bus/acl.py), the default user off.
  group "redis" {
    count = 1

    network {
      port "redis" {
        to = 6379
      }
    }

    volume "redis-data" {
      type      = "host"
      source    = "marionette-redis"
      read_only = false
    }

    service {
      name     = "marionette-redis"
      provider = "nomad"
      port     = "redis"

      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    # users.acl from the passwords in the job's Nomad variables, before Redis starts. It
    # runs as Redis's user (999): the file is readable by its owner only.
    task "redis-acl" {
      driver = "docker"
      user   = "999"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image = var.image
        args  = ["redis-acl", "--out", "/alloc/data/users.acl"]
      }

      template {
        destination = "secrets/passwords.env"
        env         = true
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ range .Tuples }}
          {{ .K }}={{ .V }}
          {{- end }}{{ end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }

    task "redis" {
      driver = "docker"

      config {
        image = "redis:7-alpine"
        ports = ["redis"]
        args = [
          "redis-server",
          "--appendonly", "yes",
          "--appendfsync", "always",
          "--aclfile", "/alloc/data/users.acl",
          "--dir", "/data",
        ]
      }

      volume_mount {
        volume      = "redis-data"
        destination = "/data"
      }

      resources {
        cpu        = 500
        memory     = 256
        memory_max = 1024
      }
    }
  }

  # Speech to text (faster-whisper tiny.en).
  group "asr" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-asr"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # The backlog per replica (entries not yet read plus read and not yet acknowledged, of
    # audio.frame), from the stages' own /metrics; the same target as
    # KEDA's (deploy/kubernetes/keda/). At most one replica per partition.
    scaling {
      enabled = true
      min     = 1
      max     = 8

      policy {
        evaluation_interval = "10s"
        cooldown            = "1m"

        check "backlog" {
          source = "prometheus"
          query  = "sum(max by (stream) (marionette_stream_lag_entries{stage=\"asr\",topic=\"audio.frame\"} + marionette_stream_pending_entries{stage=\"asr\",topic=\"audio.frame\"})) / count(count by (instance) (marionette_stream_lag_entries{stage=\"asr\"}))"

          strategy "target-value" {
            target = 100
          }
        }
      }
    }

    task "asr" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "asr"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
        MARIONETTE_ASR_MODEL              = "tiny.en"
        MARIONETTE_ASR_DEVICE             = "cpu"
        MARIONETTE_ASR_CPU_THREADS        = "2"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_ASR }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://asr:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 2000
        memory     = 512
        memory_max = 1024
      }
    }
  }

  # The LLM: Qwen2.5 0.5B in llama.cpp, embedded.
  group "policy" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-policy"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # The backlog per replica (entries not yet read plus read and not yet acknowledged, of
    # asr.final and chat.message), from the stages' own /metrics; the same target as
    # KEDA's (deploy/kubernetes/keda/). At most one replica per partition.
    scaling {
      enabled = true
      min     = 1
      max     = 8

      policy {
        evaluation_interval = "10s"
        cooldown            = "1m"

        check "backlog" {
          source = "prometheus"
          query  = "sum(max by (stream) (marionette_stream_lag_entries{stage=\"policy\",topic=~\"asr.final|chat.message\"} + marionette_stream_pending_entries{stage=\"policy\",topic=~\"asr.final|chat.message\"})) / count(count by (instance) (marionette_stream_lag_entries{stage=\"policy\"}))"

          strategy "target-value" {
            target = 2
          }
        }
      }
    }

    task "policy" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "policy"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
        MARIONETTE_POLICY_BACKEND         = "llamacpp"
        MARIONETTE_POLICY_MODEL           = "qwen2.5-0.5b"
        MARIONETTE_POLICY_THREADS         = "2"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_POLICY }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://policy:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 2000
        memory     = 1024
        memory_max = 2048
      }
    }
  }

  # Text to speech: Piper.
  group "tts" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-tts"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # The backlog per replica (entries not yet read plus read and not yet acknowledged, of
    # policy.token), from the stages' own /metrics; the same target as
    # KEDA's (deploy/kubernetes/keda/). At most one replica per partition.
    scaling {
      enabled = true
      min     = 1
      max     = 8

      policy {
        evaluation_interval = "10s"
        cooldown            = "1m"

        check "backlog" {
          source = "prometheus"
          query  = "sum(max by (stream) (marionette_stream_lag_entries{stage=\"tts\",topic=\"policy.token\"} + marionette_stream_pending_entries{stage=\"tts\",topic=\"policy.token\"})) / count(count by (instance) (marionette_stream_lag_entries{stage=\"tts\"}))"

          strategy "target-value" {
            target = 80
          }
        }
      }
    }

    task "tts" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "tts"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
        MARIONETTE_TTS_BACKEND            = "piper"
        MARIONETTE_TTS_PIPER_THREADS      = "1"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_TTS }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://tts:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 1000
        memory     = 512
        memory_max = 1024
      }
    }
  }

  # Expressions and the mouth track.
  group "avatar" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-avatar"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # The backlog per replica (entries not yet read plus read and not yet acknowledged, of
    # tts.chunk), from the stages' own /metrics; the same target as
    # KEDA's (deploy/kubernetes/keda/). At most one replica per partition.
    scaling {
      enabled = true
      min     = 1
      max     = 8

      policy {
        evaluation_interval = "10s"
        cooldown            = "1m"

        check "backlog" {
          source = "prometheus"
          query  = "sum(max by (stream) (marionette_stream_lag_entries{stage=\"avatar\",topic=\"tts.chunk\"} + marionette_stream_pending_entries{stage=\"avatar\",topic=\"tts.chunk\"})) / count(count by (instance) (marionette_stream_lag_entries{stage=\"avatar\"}))"

          strategy "target-value" {
            target = 10
          }
        }
      }
    }

    task "avatar" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "avatar"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_AVATAR }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://avatar:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }

  # Replies to WAV files (a remote speaker on the gateway's /ws/audio takes a session's
  # audio instead).
  group "playback" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-playback"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # The backlog per replica (entries not yet read plus read and not yet acknowledged, of
    # tts.chunk), from the stages' own /metrics; the same target as
    # KEDA's (deploy/kubernetes/keda/). At most one replica per partition.
    scaling {
      enabled = true
      min     = 1
      max     = 8

      policy {
        evaluation_interval = "10s"
        cooldown            = "1m"

        check "backlog" {
          source = "prometheus"
          query  = "sum(max by (stream) (marionette_stream_lag_entries{stage=\"playback\",topic=\"tts.chunk\"} + marionette_stream_pending_entries{stage=\"playback\",topic=\"tts.chunk\"})) / count(count by (instance) (marionette_stream_lag_entries{stage=\"playback\"}))"

          strategy "target-value" {
            target = 10
          }
        }
      }
    }

    task "playback" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "playback"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
        MARIONETTE_PLAYBACK_OUTPUT        = "wav"
        MARIONETTE_PLAYBACK_WAV_DIR       = "/alloc/data/playback"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_PLAYBACK }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://playback:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }

  # Logs every message on the bus (`nomad alloc logs -f -job marionette monitor`); one is enough.
  group "monitor" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-monitor"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    task "monitor" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "monitor"]
        ports = ["metrics"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_MONITOR }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://monitor:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }

  # The HTTP and WebSocket face, on the port Nomad gives it (service marionette-gateway-http).
  # It consumes no stream, so there is no backlog to scale it on.
  group "gateway" {
    count = 1

    network {
      port "metrics" {
        to = 9464
      }
      port "http" {
        to = 8765
      }
    }

    # Ready: built (model loaded), Redis answers, and it has taken part in the leases.
    service {
      name     = "marionette-gateway"
      provider = "nomad"
      port     = "metrics"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"
      }
    }

    # Every request needs the operator key (from the Nomad variables).
    service {
      name     = "marionette-gateway-http"
      provider = "nomad"
      port     = "http"
    }

    task "gateway" {
      driver = "docker"
      # On a signal a stage stops reading, lets its handlers finish (10 s at most), hands
      # its partitions back and leaves: about a second when idle, 25 s at worst.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image = var.image
        args  = ["run", "gateway"]
        ports = ["metrics", "http"]
      }

      env {
        MARIONETTE_PARTITIONS             = "8"
        MARIONETTE_LEASE_MS               = "2000"
        MARIONETTE_MEMORY_STORE           = "redis"
        MARIONETTE_TELEMETRY_METRICS_PORT = "9464"
        MARIONETTE_TELEMETRY_METRICS_HOST = "0.0.0.0"
        MARIONETTE_TELEMETRY_TRACES       = "local"
        MARIONETTE_TELEMETRY_TRACE_DIR    = "/alloc/data/traces"
        MARIONETTE_LOG_FORMAT             = "json"
        MARIONETTE_GATEWAY_HOST           = "0.0.0.0"
        MARIONETTE_GATEWAY_PORT           = "8765"
      }

      # This stage's own Redis user and password (services/bus/acl.py), and where Redis is.
      template {
        destination = "secrets/redis.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/marionette" }}{{ $password := .REDIS_PASSWORD_GATEWAY }}
          {{- range nomadService "marionette-redis" }}
          REDIS_URL=redis://gateway:{{ $password }}@{{ .Address }}:{{ .Port }}/0
          {{- end }}
          MARIONETTE_GATEWAY_OPERATOR_KEY={{ .MARIONETTE_GATEWAY_OPERATOR_KEY }}
          {{- end }}
        EOT
      }

      resources {
        cpu        = 250
        memory     = 192
        memory_max = 512
      }
    }
  }
}
