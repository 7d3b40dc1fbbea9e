# Sourced by the component scripts: apt_install PACKAGE... installs the Debian packages
# that are missing (one apt-get update per run, only when something is missing).
# Never starts a system service: the tests start their own instances on 127.0.0.1.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    local sudo=()
    if [[ $(id -u) != 0 ]]; then sudo=(sudo -n); fi
    echo "apt-get install ${missing[*]}"
    # policy-rc.d: packages such as nginx or redis-server must not start their system
    # service (it would take the default ports and outlive the tests).
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        created=1
    fi
    # Another apt-get (an unattended upgrade, a second checkout's install) may hold the
    # dpkg lock for a while: wait for it instead of failing the test run.
    local rc=0
    if [[ ! -e /tmp/.trio-gws-apt-updated ]]; then
        "${sudo[@]}" apt-get update -qq -o DPkg::Lock::Timeout=600 && touch /tmp/.trio-gws-apt-updated || rc=$?
    fi
    if ((rc == 0)); then
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
            --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    fi
    if ((created)); then "${sudo[@]}" rm -f "$policy"; fi
    return $rc
}
