#!/usr/bin/env bash
# Makes throw-away TLS material for a test broker's SASL_SSL listener, valid two days:
#
#   integration-tests/brokers/make-test-certs.sh OUT_DIR STORE_PASSWORD
#
# OUT_DIR/ca.pem        a certificate authority (PEM: librdkafka's ssl.ca.location)
# OUT_DIR/broker.p12    the broker's key and certificate for 127.0.0.1 and localhost, signed by
#                       that CA (PKCS12, STORE_PASSWORD: Kafka's ssl.keystore.location)
# OUT_DIR/other-ca.pem  another CA, which signed nothing the broker shows (a client trusting
#                       only it must refuse the broker)
#
# With openssl when it is installed, else with the JDK's keytool (CHOREO_CERT_TOOL=keytool picks
# keytool). Nothing of it is committed: the tests make it when they start a broker.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: make-test-certs.sh OUT_DIR STORE_PASSWORD" >&2
  exit 2
fi
out="$1"
pw="$2"
mkdir -p "$out"
cd "$out"
tool="${CHOREO_CERT_TOOL:-}"
if [ -z "$tool" ]; then
  if command -v openssl >/dev/null 2>&1; then tool=openssl; else tool=keytool; fi
fi
if ! command -v "$tool" >/dev/null 2>&1; then
  echo "make-test-certs.sh: neither openssl nor keytool found; TLS tests need one (keytool comes with Java 17+)" >&2
  exit 1
fi

case "$tool" in
  openssl)
    ca() { # name file-prefix
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$1" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$2.key" -out "$2.pem" 2>/dev/null
    }
    ca "choreo test CA" ca
    ca "choreo other test CA" other-ca
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
      -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
    openssl x509 -req -days 2 -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile broker.ext -out broker.pem 2>/dev/null
    openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
      -passout "pass:$pw" -out broker.p12
    rm -f broker.csr broker.ext ca.srl ca.key other-ca.key broker.key broker.pem
    ;;
  keytool)
    kt() { keytool -storetype PKCS12 -storepass "$pw" -keypass "$pw" "$@" 2>/dev/null; }
    kt -genkeypair -alias ca -keyalg EC -groupname secp256r1 -validity 2 -dname "CN=choreo test CA" \
      -ext bc:c=ca:true -ext ku:c=keyCertSign,cRLSign -keystore ca.p12
    kt -exportcert -rfc -alias ca -keystore ca.p12 -file ca.pem
    kt -genkeypair -alias other -keyalg EC -groupname secp256r1 -validity 2 \
      -dname "CN=choreo other test CA" -ext bc:c=ca:true -keystore other-ca.p12
    kt -exportcert -rfc -alias other -keystore other-ca.p12 -file other-ca.pem
    kt -genkeypair -alias broker -keyalg EC -groupname secp256r1 -validity 2 -dname "CN=localhost" \
      -keystore broker.p12
    kt -certreq -alias broker -keystore broker.p12 -file broker.csr
    kt -gencert -alias ca -keystore ca.p12 -validity 2 -rfc -infile broker.csr -outfile broker.crt \
      -ext san=ip:127.0.0.1,dns:localhost -ext eku=serverAuth
    # The reply's chain is completed from the CA, trusted in the store first.
    kt -importcert -noprompt -alias ca -file ca.pem -keystore broker.p12
    kt -importcert -alias broker -file broker.crt -keystore broker.p12
    kt -delete -alias ca -keystore broker.p12
    rm -f broker.csr broker.crt ca.p12 other-ca.p12
    ;;
  *)
    echo "make-test-certs.sh: CHOREO_CERT_TOOL must be openssl or keytool, not $tool" >&2
    exit 2
    ;;
esac
for f in ca.pem other-ca.pem broker.p12; do
  [ -s "$f" ] || { echo "make-test-certs.sh: $tool did not make $out/$f" >&2; exit 1; }
done
