#!/usr/bin/env bash
# Python 3.11 + NumPy + pydicom + nibabel from Debian bookworm packages, imported as an image with
# mmdebstrap (no registry). Usage: build.sh IMAGE_TAG
set -euo pipefail
mmdebstrap --quiet --variant=essential --include=python3-numpy,python3-pydicom,python3-nibabel \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  bookworm - /etc/apt/sources.list.d/debian.sources </dev/null \
| docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'ENV PYTHONDONTWRITEBYTECODE=1' -c 'CMD ["python3"]' - "$1"
