#!/usr/bin/env bash
# Make sure the Fashion-MNIST idx files exist; install Debian's package when we can.
set -u
dir="${1:-/usr/share/datasets/fashion-mnist}"
need="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
missing=0
for f in $need; do [ -f "$dir/$f" ] || missing=1; done
[ $missing = 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "fashion-mnist: installing Debian package dataset-fashion-mnist" >&2
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
fi
for f in $need; do
  if [ ! -f "$dir/$f" ]; then
    echo "fashion-mnist: $dir/$f is missing and apt-get could not install dataset-fashion-mnist;" \
         "put the four idx .gz files in a directory and pass --fashion-mnist-dir DIR (or FMNIST=DIR to make)" >&2
    exit 1
  fi
done
