#!/usr/bin/env bash
# Make sure a local Orthanc PACS with its DICOMweb plugin is installed (the DICOMweb tests start
# their own instance on loopback; nothing here starts a service). Debian/Ubuntu packages; about
# 30 s on a machine with the package lists reachable. Without root (or password-less sudo) it says
# what to run instead, and the DICOMweb tests then fail with the same hint.
set -euo pipefail
if [ -x /usr/sbin/Orthanc ] && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    exit 0
fi
install=(apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb)
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-orthanc: no apt-get here: install Orthanc with its DICOMweb plugin by hand" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    sudo=()
elif sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install-orthanc: needs root: sudo ${install[*]}" >&2
    exit 0
fi
echo "install-orthanc: installing orthanc + orthanc-dicomweb (DICOMweb tests)"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" "${install[@]}" >/dev/null
