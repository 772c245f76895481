# HTTP for the nano tier's Python, through the host: http.client's connections and urllib.request's
# handlers are replaced by ones that never open a socket (the worker has none). A request is written
# as one message to a file descriptor of a device the worker made (python/net-channel.ts): a line of
# JSON (method, URL, headers, timeout) and the body; reading the descriptor blocks until the host
# answers (a line of JSON: status, reason, final URL, headers or an error; then the body). The host
# applies the sandbox's network grant, as it does for JavaScript's fetch. The guest can reach and
# change everything here: the worker and the host check every request again.
# The worker runs this file before its setup code, once, before the memory snapshot is taken.

def _make_network():
    import http.client, json, os, socket, sys, types, urllib.error, urllib.request

    state = {"fd": -1}
    READ_BYTES = 1 << 20
    # Codings the host decodes (as fetch does): the body the guest gets is already decoded.
    DECODED = {"gzip", "x-gzip", "deflate", "br"}
    # Framing the host decides (body length, connection); never relayed from the guest's request.
    REQUEST_DROPPED = {"host", "content-length", "connection", "transfer-encoding"}

    class NetworkError(OSError):
        """A request the sandbox's host refused or could not complete; the message is the host's.
        `code` is "NETWORK_DENIED" when the network grant or one of its caps refused it."""

        def __init__(self, message, code=None):
            super().__init__(message)
            self.code = code

    class NetworkTimeout(NetworkError, TimeoutError):
        pass

    def exchange(method, url, headers, body, timeout):
        """One request through the host: (head, body) of the answer, or NetworkError."""
        fd = state["fd"]
        if fd < 0:
            raise NetworkError("no network: the sandbox's network channel is not open")
        head = {"method": method, "url": url, "headers": headers}
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            head["timeoutMs"] = max(1, int(timeout * 1000))
        message = json.dumps(head).encode("utf-8") + b"\n" + (body or b"")
        # One write is one whole request (the device takes all of it or refuses it).
        os.write(fd, message)
        parts = []
        while chunk := os.read(fd, READ_BYTES):
            parts.append(chunk)
        raw = b"".join(parts)
        line, _, data = raw.partition(b"\n")
        answer = json.loads(line)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            cls = NetworkTimeout if error.get("name") == "TimeoutError" else NetworkError
            raise cls(str(error.get("message", "network request failed")), error.get("code"))
        return answer, data

    def dechunk(data):
        out = []
        while True:
            size_line, sep, data = data.partition(b"\r\n")
            if not sep:
                raise http.client.HTTPException("malformed chunked request body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                return b"".join(out)
            out.append(data[:size])
            data = data[size + 2:]

    def parse_request(raw, scheme, host, port):
        """The request http.client wrote: (method, absolute URL, headers, body)."""
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise http.client.CannotSendRequest("the request was not complete")
        lines = head.decode("latin-1").split("\r\n")
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        headers = []
        chunked = False
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # a folded header line
                headers[-1][1] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            if name.lower() not in REQUEST_DROPPED:
                headers.append([name, value])
        if chunked:
            body = dechunk(body)
        if target.startswith(("http://", "https://")):
            url = target  # the absolute form a proxy is sent: the URL is what counts
        else:
            netloc = "[%s]" % host if ":" in host else host
            default = 443 if scheme == "https" else 80
            url = "%s://%s%s%s" % (scheme, netloc, "" if port == default else ":%d" % port, target)
        return method, url, headers, body

    def response_bytes(answer, data, method):
        """The host's answer as HTTP/1.1 bytes for http.client.HTTPResponse to parse."""
        def clean(text):
            return str(text).replace("\r", " ").replace("\n", " ")
        status = int(answer["status"])
        lines = ["HTTP/1.1 %03d %s" % (status, clean(answer.get("statusText", "")))]
        for name, value in answer.get("headers", []):
            lname = str(name).lower()
            if lname in ("connection", "transfer-encoding", "keep-alive"):
                continue
            if lname == "content-length" and method != "HEAD":
                continue
            if lname == "content-encoding" and method != "HEAD":
                codings = [c.strip().lower() for c in str(value).split(",") if c.strip()]
                if codings and all(c in DECODED for c in codings):
                    continue
            lines.append("%s: %s" % (clean(name), clean(value)))
        if method != "HEAD":
            lines.append("Content-Length: %d" % len(data))
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + data

    class _Pipe:
        """What http.client takes for a socket: collects the request, serves the answer."""

        def __init__(self):
            self.sent = []
            self.answer = b""

        def sendall(self, data):
            self.sent.append(bytes(data))

        def makefile(self, mode="rb", *args, **kwargs):
            import io
            return io.BytesIO(self.answer)

        def setsockopt(self, *args):
            pass

        def settimeout(self, *args):
            pass

        def close(self):
            pass

    base_connection = http.client.HTTPConnection

    class HTTPConnection(base_connection):
        """http.client.HTTPConnection over the sandbox's host: the request goes out as one
        message when the response is asked for; no socket is ever opened."""

        scheme = "http"

        def connect(self):
            sys.audit("http.client.connect", self, self.host, self.port)
            self.sock = _Pipe()

        def getresponse(self):
            pipe = self.sock
            if isinstance(pipe, _Pipe) and pipe.sent:
                host, port = (self._tunnel_host, self._tunnel_port) if self._tunnel_host else (self.host, self.port)
                method, url, headers, body = parse_request(b"".join(pipe.sent), self.scheme, host, port)
                pipe.sent = []
                timeout = self.timeout if self.timeout is not socket._GLOBAL_DEFAULT_TIMEOUT else socket.getdefaulttimeout()
                try:
                    answer, data = exchange(method, url, headers, body, timeout)
                except BaseException:
                    self.close()
                    raise
                pipe.answer = response_bytes(answer, data, method)
                response = super().getresponse()
                response.agentbox_url = str(answer.get("url", url))
                return response
            return super().getresponse()

    class HTTPSConnection(HTTPConnection):
        """HTTPS over the sandbox's host, which makes the TLS connection and checks the
        certificate itself; `context` is accepted and not used."""

        scheme = "https"
        default_port = http.client.HTTPS_PORT

        def __init__(self, host, port=None, *, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                     source_address=None, context=None, blocksize=8192):
            super().__init__(host, port, timeout, source_address, blocksize=blocksize)
            self._context = context

    def do_open(handler, connection_class, req):
        try:
            response = handler.do_open(connection_class, req)
        except NetworkError as e:
            raise urllib.error.URLError(e) from None
        # The host followed the redirects: the URL the answer came from.
        response.url = getattr(response, "agentbox_url", response.url)
        return response

    class HTTPHandler(urllib.request.AbstractHTTPHandler):
        def http_open(self, req):
            return do_open(self, http.client.HTTPConnection, req)

        http_request = urllib.request.AbstractHTTPHandler.do_request_

    class HTTPSHandler(urllib.request.AbstractHTTPHandler):
        def __init__(self, debuglevel=None, context=None, check_hostname=None):
            super().__init__(debuglevel)
            self._context = context

        def https_open(self, req):
            return do_open(self, http.client.HTTPSConnection, req)

        https_request = urllib.request.AbstractHTTPHandler.do_request_

    for cls in (HTTPConnection, HTTPSConnection):
        cls.__module__ = "http.client"
    for cls in (HTTPHandler, HTTPSHandler):
        cls.__module__ = "urllib.request"
    http.client.HTTPConnection = HTTPConnection
    http.client.HTTPSConnection = HTTPSConnection
    # build_opener (and so urlopen) looks these up when called.
    urllib.request.HTTPHandler = HTTPHandler
    urllib.request.HTTPSHandler = HTTPSHandler
    urllib.request.install_opener(None)

    mod = types.ModuleType("_agentbox_net")
    mod.NetworkError = NetworkError
    mod.NetworkTimeout = NetworkTimeout

    def attach(fd):
        state["fd"] = int(fd)

    mod.attach = attach
    sys.modules["_agentbox_net"] = mod


_make_network()
del _make_network
