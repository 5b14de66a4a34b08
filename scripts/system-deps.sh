#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing (one apt-get run):
# runsc (gVisor, the arena's default sandbox), bubblewrap + util-linux + libseccomp2 (its
# fallback), chromium + chromium-driver (the dashboard's
# browser test), postgresql (the arena's PostgreSQL tests).
set -euo pipefail
need=()
command -v runsc >/dev/null || need+=(runsc)
command -v bwrap >/dev/null || need+=(bubblewrap)
ldconfig -p | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)
command -v setpriv >/dev/null || need+=(util-linux)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: need root to apt-get install ${need[*]}" >&2
    exit 2
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
