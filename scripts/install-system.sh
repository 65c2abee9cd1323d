#!/usr/bin/env bash
# Installs the system packages deid-node and its test suite need, from Debian's archive.
# Idempotent: a package already present is skipped, so a warm machine pays nothing.
set -euo pipefail

packages=(
  dcmtk            # storescu/echoscu: the sending modality in tests and benchmarks
  orthanc          # the research PACS in end-to-end tests
  orthanc-dicomweb # its DICOMweb plugin: the STOW-RS destination in tests
  tesseract-ocr    # OCR for burned-in text
  tesseract-ocr-eng
  postgresql       # the shared mapping store for several nodes
  dicom3tools      # dciodvfy: IOD validation of de-identified output
  chromium         # headless browser for the web page's tests (tests/web)
  chromium-driver  # its WebDriver, /usr/bin/chromedriver
  fonts-dejavu-core   # TrueType fonts the held-out probes and the pixel tests burn text in with
  fonts-liberation
  fonts-freefont-ttf
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's orthanc and postgresql packages try to start their own services; keep them off.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
$SUDO chmod +x /usr/sbin/policy-rc.d
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
$SUDO rm -f /usr/sbin/policy-rc.d
