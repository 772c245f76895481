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
    _make_requests(exchange, NetworkError, NetworkTimeout)


def _make_requests(exchange, NetworkError, NetworkTimeout):
    """A `requests`-compatible module for the nano tier (no real requests package here): the common
    call path (requests.get/post/..., Session, Response, the exceptions) over the same host exchange
    as urllib. Found last on sys.meta_path, so a real requests, if one is ever importable, wins.
    Not carried: files= (multipart), streaming bodies, cookies across requests, proxies, verify and
    cert (the host makes the TLS connection and checks the certificate); redirects are followed by
    the host, each hop checked against the grant, whatever allow_redirects says."""
    import base64, collections.abc, importlib.abc, importlib.util, json as jsonlib, sys, types, urllib.parse

    exceptions = types.ModuleType("requests.exceptions")

    class RequestException(IOError):
        def __init__(self, *args, response=None, request=None):
            super().__init__(*args)
            self.response = response
            self.request = request

    class HTTPError(RequestException): pass
    class ConnectionError(RequestException): pass
    class Timeout(RequestException): pass
    class ConnectTimeout(ConnectionError, Timeout): pass
    class ReadTimeout(Timeout): pass
    class TooManyRedirects(RequestException): pass
    class InvalidURL(RequestException, ValueError): pass
    class MissingSchema(RequestException, ValueError): pass
    class InvalidSchema(RequestException, ValueError): pass
    class JSONDecodeError(RequestException, ValueError): pass

    for cls in (RequestException, HTTPError, ConnectionError, Timeout, ConnectTimeout, ReadTimeout, TooManyRedirects, InvalidURL, MissingSchema, InvalidSchema, JSONDecodeError):
        cls.__module__ = "requests.exceptions"
        setattr(exceptions, cls.__name__, cls)

    class CaseInsensitiveDict(collections.abc.MutableMapping):
        def __init__(self, data=None, **kwargs):
            self._store = {}
            self.update(data or {}, **kwargs)

        def __setitem__(self, key, value):
            self._store[key.lower()] = (key, value)

        def __getitem__(self, key):
            return self._store[key.lower()][1]

        def __delitem__(self, key):
            del self._store[key.lower()]

        def __iter__(self):
            return (k for k, _ in self._store.values())

        def __len__(self):
            return len(self._store)

        def copy(self):
            return CaseInsensitiveDict(dict(self.items()))

        def __repr__(self):
            return repr(dict(self.items()))

    class Response:
        def __init__(self):
            self.status_code = None
            self.reason = ""
            self.url = ""
            self.headers = CaseInsensitiveDict()
            self.content = b""
            self.encoding = None
            self.history = []
            self.request = None
            self.cookies = {}
            self.elapsed = None

        @property
        def ok(self):
            return self.status_code < 400

        def __bool__(self):
            return self.ok

        @property
        def text(self):
            return self.content.decode(self.encoding or "utf-8", errors="replace")

        @property
        def apparent_encoding(self):
            return "utf-8"

        def json(self, **kwargs):
            try:
                return jsonlib.loads(self.text, **kwargs)
            except ValueError as e:
                raise JSONDecodeError(str(e), response=self) from None

        def raise_for_status(self):
            if 400 <= self.status_code < 600:
                kind = "Client" if self.status_code < 500 else "Server"
                raise HTTPError("%d %s Error: %s for url: %s" % (self.status_code, kind, self.reason, self.url), response=self)

        def iter_content(self, chunk_size=1, decode_unicode=False):
            data = self.text if decode_unicode else self.content
            size = chunk_size or len(data) or 1
            for i in range(0, len(data), size):
                yield data[i:i + size]

        def iter_lines(self, chunk_size=512, decode_unicode=False, delimiter=None):
            data = self.text if decode_unicode else self.content
            yield from (data.split(delimiter) if delimiter else data.splitlines())

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def __repr__(self):
            return "<Response [%s]>" % self.status_code

    def encoding_of(content_type):
        if not content_type:
            return None
        mime, _, params = content_type.partition(";")
        for param in params.split(";"):
            k, _, v = param.strip().partition("=")
            if k.lower() == "charset" and v:
                return v.strip("'\"")
        return "ISO-8859-1" if mime.strip().lower().startswith("text/") else None

    class Session:
        def __init__(self):
            self.headers = CaseInsensitiveDict({"User-Agent": "python-requests/2.31.0 (agentbox)", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"})
            self.params = {}
            self.auth = None

        def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                    timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None, cert=None, json=None):
            if files:
                raise NotImplementedError("requests on the nano tier: files= (multipart uploads) is not supported; send the body with data=, or use the heavy tier")
            url = str(url)
            scheme = url.partition("://")[0].lower() if "://" in url else ""
            if not scheme:
                raise MissingSchema("Invalid URL %r: No scheme supplied. Perhaps you meant https://%s?" % (url, url))
            if scheme not in ("http", "https"):
                raise InvalidSchema("No connection adapters were found for %r" % url)
            query = dict(self.params)
            query.update(params or {})
            if query:
                url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query, doseq=True)
            merged = self.headers.copy()
            for k, v in (headers or {}).items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            body = None
            if json is not None:
                body = jsonlib.dumps(json).encode("utf-8")
                merged.setdefault("Content-Type", "application/json")
            elif isinstance(data, (dict, list, tuple)):
                body = urllib.parse.urlencode(data, doseq=True).encode("ascii")
                merged.setdefault("Content-Type", "application/x-www-form-urlencoded")
            elif isinstance(data, str):
                body = data.encode("utf-8")
            elif isinstance(data, (bytes, bytearray)):
                body = bytes(data)
            elif data is not None and hasattr(data, "read"):
                body = data.read()
                body = body.encode("utf-8") if isinstance(body, str) else body
            auth = auth or self.auth
            if isinstance(auth, tuple) and len(auth) == 2:
                token = base64.b64encode(("%s:%s" % auth).encode("latin-1")).decode("ascii")
                merged["Authorization"] = "Basic " + token
            if isinstance(timeout, tuple):
                timeout = sum(t for t in timeout if t)
            try:
                answer, content = exchange(method.upper(), url, [[str(k), str(v)] for k, v in merged.items()], body, timeout)
            except NetworkTimeout as e:
                raise ReadTimeout(str(e)) from None
            except NetworkError as e:
                raise ConnectionError(str(e)) from None
            r = Response()
            r.status_code = int(answer["status"])
            r.reason = str(answer.get("statusText", ""))
            r.url = str(answer.get("url", url))
            for name, value in answer.get("headers", []):
                lname = str(name).lower()
                if lname in ("content-encoding", "content-length", "transfer-encoding"):
                    continue  # the host decoded the body; its length is the content's
                r.headers[name] = "%s, %s" % (r.headers[name], value) if name in r.headers else value
            r.headers["Content-Length"] = str(len(content))
            r.content = content
            r.encoding = encoding_of(r.headers.get("content-type"))
            return r

        def get(self, url, **kwargs):
            return self.request("GET", url, **kwargs)

        def options(self, url, **kwargs):
            return self.request("OPTIONS", url, **kwargs)

        def head(self, url, **kwargs):
            return self.request("HEAD", url, **kwargs)

        def post(self, url, data=None, json=None, **kwargs):
            return self.request("POST", url, data=data, json=json, **kwargs)

        def put(self, url, data=None, **kwargs):
            return self.request("PUT", url, data=data, **kwargs)

        def patch(self, url, data=None, **kwargs):
            return self.request("PATCH", url, data=data, **kwargs)

        def delete(self, url, **kwargs):
            return self.request("DELETE", url, **kwargs)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    requests = types.ModuleType("requests")
    requests.__version__ = "2.31.0+agentbox"
    requests.__path__ = []
    requests.exceptions = exceptions
    requests.Session = Session
    requests.session = Session
    requests.Response = Response
    requests.structures = types.SimpleNamespace(CaseInsensitiveDict=CaseInsensitiveDict)
    requests.codes = types.SimpleNamespace(ok=200, created=201, accepted=202, no_content=204, moved=301, found=302, not_modified=304,
                                           bad_request=400, unauthorized=401, forbidden=403, not_found=404, conflict=409,
                                           too_many_requests=429, internal_server_error=500, bad_gateway=502, service_unavailable=503)
    for cls in (RequestException, HTTPError, ConnectionError, Timeout, ConnectTimeout, ReadTimeout, TooManyRedirects, InvalidURL, MissingSchema, InvalidSchema, JSONDecodeError):
        setattr(requests, cls.__name__, cls)

    def verb(method):
        def call(url, **kwargs):
            with Session() as s:
                return s.request(method, url, **kwargs)
        call.__name__ = method.lower()
        return call

    def request(method, url, **kwargs):
        with Session() as s:
            return s.request(method, url, **kwargs)

    requests.request = request
    for method in ("GET", "OPTIONS", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        setattr(requests, method.lower(), verb(method))
    modules = {"requests": requests, "requests.exceptions": exceptions}

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name in modules:
                return importlib.util.spec_from_loader(name, self, is_package=(name == "requests"))
            return None

        def create_module(self, spec):
            return modules[spec.name]

        def exec_module(self, module):
            pass

    sys.meta_path.append(Finder())


_make_network()
del _make_network, _make_requests
