# TLS for the MQTT link: a client context that verifies the broker against
# the configured CA (config mqtt.ca) and optionally presents a client
# certificate (mqtt.cert + mqtt.key). Files may be PEM or DER; PEM is decoded
# here, as not every MicroPython build's mbedTLS parses PEM. The broker's host
# name (mqtt.host) must match its certificate.
import binascii
import ssl


def _der(path):
    """Every certificate or key in a PEM or DER file, as DER."""
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" not in data:
        return [data]
    out = []
    for block in data.split(b"-----BEGIN")[1:]:
        # b" CERTIFICATE-----\n<base64>\n-----END CERTIFICATE-----\n"
        out.append(binascii.a2b_base64(block.split(b"-----", 2)[1]))
    return out


def context(m):
    """A fresh client context for one connection. The client sets
    TCP_NODELAY on the plain socket before it wraps it (the TLS socket has no
    setsockopt), so small records are not held back by Nagle's algorithm."""
    ca = m.get("ca")
    if not ca:
        raise ValueError("mqtt.tls needs mqtt.ca (the CA certificate file)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in _der(ca):
        ctx.load_verify_locations(cadata=der)
    if m.get("cert"):
        ctx.load_cert_chain(_der(m["cert"])[0], _der(m["key"])[0])
    return ctx
