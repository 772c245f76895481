# Jupyter-style rich results for the guest's Python: display(*objs) and IPython's _repr_*_
# protocol. One file for both tiers: the heavy tier's agent (agent.py) loads it from beside itself
# in the image; the nano tier's worker runs it before its setup code (the build copies it to
# dist/worker/). Standard library only. Everything it produces is checked again by the host.

def _make_display(emit=None):
    # Jupyter-style rich results: display(*objs) and IPython's _repr_*_ protocol, collected per run
    # as MIME bundles (binary types base64). A bad form is skipped with a note on stderr; the host
    # checks every bundle again, as the guest can change anything here.
    # emit(result): the tier's way to send a result to the host as it happens (so a caller sees it
    # while the run goes on); it returns True once sent. Results it did not send wait for finish().
    import base64 as b64mod, binascii, json as jsonmod, sys as sysmod
    allowed = ("text/plain", "text/html", "text/markdown", "image/png", "image/jpeg", "image/svg+xml", "application/json", "application/pdf",
               "application/vnd.agentbox.chart+json")
    binary = ("image/png", "image/jpeg", "application/pdf")
    reprs = (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"), ("image/svg+xml", "_repr_svg_"),
             ("image/png", "_repr_png_"), ("image/jpeg", "_repr_jpeg_"), ("application/json", "_repr_json_"))
    run = {"results": [], "room": 0, "cut": False}
    drawn = set()  # ids of figures this cell already returned, so the end-of-cell flush skips them

    def note(text):
        try:
            sysmod.stderr.write("display: %s\n" % text)
        except BaseException:
            pass

    def describe(exc):
        try:
            return "%s: %s" % (type(exc).__name__, str(exc)[:200])
        except Exception:
            return type(exc).__name__

    def encode(mime, value, source):
        if isinstance(value, tuple) and len(value) == 2:  # (data, metadata), as IPython allows
            value = value[0]
        if mime in binary:
            if isinstance(value, (bytes, bytearray, memoryview)):
                return b64mod.b64encode(bytes(value)).decode("ascii")
            if isinstance(value, str):
                text = "".join(value.split())
                try:
                    b64mod.b64decode(text, validate=True)
                except (ValueError, binascii.Error):
                    note("%s gave %s data that is not base64; skipped" % (source, mime))
                    return None
                return text
        elif mime == "application/json":
            try:
                return jsonmod.dumps(value, allow_nan=False)
            except Exception as exc:
                note("%s gave %s data that is not JSON (%s); skipped" % (source, mime, describe(exc)))
                return None
        elif isinstance(value, str):
            return str(value)
        note("%s gave %s for %s, expected %s; skipped" % (source, type(value).__name__, mime, "bytes" if mime in binary else "str"))
        return None

    def attr(obj, name):
        try:
            method = getattr(obj, name, None)
        except Exception:
            return None
        return method if callable(method) else None

    # matplotlib, as Jupyter's inline backend does it: every figure open at the end of a cell (or
    # at plt.show()) becomes an image/png result and is closed; a Figure shown as a value or with
    # display() is drawn once. Nothing here imports matplotlib: the caller's code does.
    def is_figure(obj):
        mod = sysmod.modules.get("matplotlib.figure")
        return mod is not None and isinstance(obj, mod.Figure)

    def figure_bundle(fig):
        import io
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", bbox_inches="tight")
        except Exception as exc:
            note("a matplotlib figure could not be drawn: %s" % describe(exc))
            return None
        drawn.add(id(fig))
        data = {"image/png": b64mod.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}
        try:
            chart = figure_chart(fig)
            text = None if chart is None else jsonmod.dumps(chart, allow_nan=False)
            if text is not None and len(text) <= MAX_CHART_BYTES:  # never at the cost of the PNG fitting
                data[CHART] = text
        except Exception:  # the chart's data is extra: a figure it cannot read is still its PNG
            pass
        return data

    # The figure's data as E2B's code interpreter gives it (its `chart`): the type of each axes
    # (line, scatter, bar, pie, box_and_whisker), its title, labels, units, ticks and scales, and
    # the plotted elements; several recognised axes make a "superchart". Read from the artists
    # matplotlib keeps, never by drawing; None when no axes is recognised.
    CHART = "application/vnd.agentbox.chart+json"
    MAX_POINTS = 10000
    MAX_CHART_BYTES = 256 * 1024
    unit_re = __import__("re").compile(r"\s\((.*?)\)|\[(.*?)\]")  # E2B's: "time (s)" or "[s]"

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        return f if f == f and f not in (float("inf"), float("-inf")) else None

    def axis_info(ax, which):
        axis = ax.xaxis if which == "x" else ax.yaxis
        scale = axis.get_scale()
        dates = sysmod.modules.get("matplotlib.dates")
        formatter = axis.get_major_formatter()
        mapping = getattr(getattr(axis, "units", None), "_mapping", None)
        if dates is not None and isinstance(formatter, (dates.DateFormatter, dates.AutoDateFormatter, dates.ConciseDateFormatter)):
            scale = "datetime"
            conv = lambda v: dates.num2date(v).isoformat()  # noqa: E731
        elif isinstance(mapping, dict) and mapping:
            scale = "categorical"
            names = {float(i): str(k) for k, i in mapping.items()}
            conv = lambda v: names.get(float(v), num(v))  # noqa: E731
        else:
            conv = num
        ticks = [conv(t) for t in axis.get_ticklocs()]
        labels = [t.get_text() for t in axis.get_ticklabels()]
        return scale, conv, ticks, labels

    def label_and_unit(text):
        m = unit_re.search(text or "")
        return (text or None), ((m.group(1) or m.group(2)) if m else None)

    def auto_label(label, prefix, name):
        # matplotlib's own names for unlabelled artists ("_child3", "_container0") become E2B's ("Line 3").
        if isinstance(label, str) and label.startswith(prefix) and label[len(prefix):].isdigit():
            return "%s %s" % (name, label[len(prefix):])
        return label if isinstance(label, str) else ""

    def base2d(ax, kind):
        out = {"type": kind, "title": ax.get_title()}
        for which, text in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            label, unit = label_and_unit(text)
            out[which + "_label"] = label
            if unit:
                out[which + "_unit"] = unit
        return out

    # Box plots. matplotlib keeps no record of a boxplot on the Axes (no container, as bars have;
    # no gid; the artists' labels are the automatic "_childN"), and pandas' df.boxplot(),
    # df.plot(kind="box") and seaborn all go through Axes.bxp, which draws each box as plain
    # artists: 2 whiskers (2-point lines along the box's axis, from q1 down to the lower whisker
    # end and from q3 up to the upper one), 0 or 2 caps, the box (a closed 5-point Line2D, or a
    # PathPatch with patch_artist=True; 11 points when notched), the median (a segment across the
    # box), maybe a mean, and the fliers (a marker-only line at the box's position). So the signal
    # is that structure, read from the geometry rather than from the order of ax.lines (which
    # changed between matplotlib versions): whiskers pair up at one position, their inner ends are
    # edges of a box centred there, and a median crosses that box. An axes is a box plot only when
    # every visible line on it is one of these parts: a line chart has no such boxes, and an axes
    # mixing boxes with other lines stays a line chart rather than lose the lines.
    MAX_BOX_LINES = 8 * 250  # more lines than 250 boxes draw: not looked at as a box plot (the matching is quadratic)

    def close(a, b, scale=1.0):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b), abs(scale))

    def box_elements(ax, lines, vertical):
        patches = sysmod.modules.get("matplotlib.patches")
        pi, vi = (0, 1) if vertical else (1, 0)  # the boxes' position axis, their value axis
        segs, marks = [], []
        for order, line in enumerate(lines):
            try:
                xy = [(float(p[pi]), float(p[vi])) for p in line.get_xydata()]
            except Exception:
                return None
            if not xy:
                continue  # an empty flier set (no outliers) draws nothing
            style = line.get_linestyle()
            if style in (None, "None", "none", "", " "):
                marks.append((order, xy))
            else:
                segs.append((order, xy))
        whiskers = {}  # position -> [segment]
        for order, xy in segs:
            if len(xy) == 2 and xy[0][0] == xy[1][0]:
                whiskers.setdefault(xy[0][0], []).append((order, xy))
        shapes = [xy for _, xy in segs if len(xy) in (5, 11) and xy[0] == xy[-1]]
        if patches is not None:
            for p in ax.patches:
                if isinstance(p, patches.PathPatch) and p.get_visible():
                    try:
                        verts = p.get_path().vertices
                        shapes.append([(float(v[pi]), float(v[vi])) for v in verts])
                    except Exception:
                        pass
        used = set()
        boxes = []
        for pos, found in whiskers.items():
            if len(found) != 2:
                return None
            (o1, w1), (o2, w2) = sorted(found, key=lambda f: min(f[1][0][1], f[1][1][1]))
            lo, q1 = min(w1[0][1], w1[1][1]), max(w1[0][1], w1[1][1])
            q3, hi = min(w2[0][1], w2[1][1]), max(w2[0][1], w2[1][1])
            if not (lo <= q1 <= q3 <= hi):
                return None
            half = None
            for shape in shapes:
                ps = [p for p, _ in shape]
                vs = [v for _, v in shape]
                left, right = min(ps), max(ps)
                if (right > left and close((left + right) / 2, pos, right - left)
                        and any(close(v, q1) for v in vs) and any(close(v, q3) for v in vs)):
                    half = (right - left) / 2
                    break
            if half is None:
                return None
            used.update((o1, o2))
            # Segments across the box's axis, centred on it: caps (at the whisker ends, half the
            # box's width), the median, a mean drawn as a line (meanline=True).
            across = [(o, xy) for o, xy in segs if o not in used and len(xy) == 2 and xy[0][1] == xy[1][1]
                      and xy[0][0] != xy[1][0] and close((xy[0][0] + xy[1][0]) / 2, pos, half)
                      and abs(xy[0][0] - xy[1][0]) <= 2 * half * (1 + 1e-9)]
            for end in (lo, hi):  # the first segment at a whisker's end narrower than the box: its cap
                for o, xy in across:
                    if o not in used and close(xy[0][1], end) and abs(xy[0][0] - xy[1][0]) < 2 * half * (1 - 1e-9):
                        used.add(o)
                        break
            median = None
            for o, xy in across:  # bxp draws the median before a mean line
                if o not in used and q1 - 1e-9 * max(1.0, abs(q1)) <= xy[0][1] <= q3 + 1e-9 * max(1.0, abs(q3)):
                    used.add(o)
                    median = xy[0][1]
                    break
            if median is None:
                return None
            for o, xy in across:  # one more across the box: a mean line (meanline=True), anywhere
                if o not in used:
                    used.add(o)
                    break
            # Markers at the box's position: the fliers (drawn last, every one beyond the whisker
            # ends, as matplotlib picks them) and a mean marker (showmeans=True) before them.
            here = [(o, xy) for o, xy in marks if all(close(p, pos, half) for p, _ in xy)]
            if len(here) > 2:
                return None
            used.update(o for o, _ in here)
            outliers = []
            if here and all(v < lo or v > hi for _, v in here[-1][1]):
                outliers = [num(v) for _, v in here[-1][1][:MAX_POINTS]]
            boxes.append((pos, {"min": num(lo), "first_quartile": num(q1), "median": num(median),
                                "third_quartile": num(q3), "max": num(hi), "outliers": outliers}))
        if not boxes:
            return None
        boxes_drawn = {o for o, xy in segs if len(xy) in (5, 11) and xy[0] == xy[-1]
                       and any(close((min(p for p, _ in xy) + max(p for p, _ in xy)) / 2, pos) for pos, _ in boxes)}
        used.update(boxes_drawn)
        if any(o not in used for o, _ in segs + marks):
            return None
        return sorted(boxes, key=lambda b: b[0])

    def box_chart(ax, lines):
        if len(lines) > MAX_BOX_LINES:
            return None
        for vertical in (True, False):
            boxes = box_elements(ax, lines, vertical)
            if boxes:
                break
        else:
            return None
        chart = base2d(ax, "box_and_whisker")
        _, conv, ticks, labels = axis_info(ax, "x" if vertical else "y")
        at = {t: l for t, l in zip(ticks, labels)}
        chart["elements"] = [dict(label=at.get(conv(pos), str(conv(pos))), **element) for pos, element in boxes]
        return chart

    def axes_chart(ax):
        patches = sysmod.modules.get("matplotlib.patches")
        collections = sysmod.modules.get("matplotlib.collections")
        lines = [l for l in ax.get_lines() if l.get_visible()]
        wedges = [p for p in ax.patches if patches is not None and isinstance(p, patches.Wedge)]
        bars = [c for c in getattr(ax, "containers", []) if type(c).__name__ == "BarContainer"]
        scatters = [c for c in ax.collections if collections is not None and isinstance(c, collections.PathCollection)]
        if lines:
            box = box_chart(ax, lines)
            if box is not None:
                return box
        if wedges and not lines:
            return {"type": "pie", "title": ax.get_title(),
                    "elements": [{"label": w.get_label(), "angle": num(abs(w.theta2 - w.theta1)), "radius": num(w.r)} for w in wedges]}
        if bars and not lines:
            chart = base2d(ax, "bar")
            _, conv, ticks, labels = axis_info(ax, "x")
            at = {t: l for t, l in zip(ticks, labels)}
            elements = []
            for c in bars:
                group = auto_label(c.get_label(), "_container", "Group")
                for rect in c.patches:
                    x = conv(rect.get_x() + rect.get_width() / 2)
                    elements.append({"label": at.get(x, str(x)), "group": group, "value": num(rect.get_height())})
            chart["elements"] = elements
            return chart
        if lines or scatters:
            chart = base2d(ax, "line" if lines else "scatter")
            for which in ("x", "y"):
                scale, conv, ticks, labels = axis_info(ax, which)
                chart.update({which + "_scale": scale, which + "_ticks": ticks, which + "_tick_labels": labels})
            xconv = axis_info(ax, "x")[1]
            yconv = axis_info(ax, "y")[1]
            elements = []
            for artist in (lines or scatters):
                xy = artist.get_xydata() if lines else artist.get_offsets()
                points = [[xconv(x), yconv(y)] for x, y in list(xy)[:MAX_POINTS]]
                elements.append({"label": auto_label(artist.get_label(), "_child", "Line"), "points": points})
            chart["elements"] = elements
            return chart
        return None

    def figure_chart(fig):
        charts = [c for c in (axes_chart(ax) for ax in fig.get_axes()) if c is not None]
        if not charts:
            return None
        if len(charts) == 1:
            return charts[0]
        title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
        return {"type": "superchart", "title": title, "elements": charts}

    def show_figures(*args, **kwargs):
        helpers = sysmod.modules.get("matplotlib._pylab_helpers")
        if helpers is None:
            return
        try:
            figures = [m.canvas.figure for m in helpers.Gcf.get_all_fig_managers()]
        except Exception as exc:
            note("matplotlib's open figures could not be listed: %s" % describe(exc))
            return
        for fig in figures:
            if id(fig) not in drawn:
                data = figure_bundle(fig)
                if data is not None:
                    add(data, False)
        try:
            sysmod.modules["matplotlib.pyplot"].close("all")
        except Exception:
            pass

    class MatplotlibBackend:
        # `MPLBACKEND=module://_agentbox_matplotlib` (set by the heavy tier's REPL): Agg drawing,
        # with show() returning the figures as results. Made on import, as the module needs Agg.
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "_agentbox_matplotlib":
                return None
            import importlib.util
            return importlib.util.spec_from_loader(name, MatplotlibBackend)

        @staticmethod
        def create_module(spec):
            return None

        @staticmethod
        def exec_module(module):
            from matplotlib.backend_bases import FigureManagerBase
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            module.FigureCanvas = FigureCanvasAgg
            module.FigureManager = FigureManagerBase
            module.show = show_figures

    sysmod.meta_path.append(MatplotlibBackend)

    def series_html(obj):
        # A pandas Series has no _repr_html_; Jupyter users expect the table its frame shows.
        pd = sysmod.modules.get("pandas")
        if pd is None or not isinstance(obj, pd.Series):
            return None
        try:
            return obj.to_frame()._repr_html_()
        except Exception as exc:
            note("a pandas Series could not be shown as HTML: %s" % describe(exc))
            return None

    def bundle(obj, plain=None):
        data = {}
        if is_figure(obj):
            data = figure_bundle(obj) or {}
        elif "pandas" in sysmod.modules:
            html = series_html(obj)
            if html is not None:
                data["text/html"] = html
        if not isinstance(obj, type):  # a class's _repr_html_ is an unbound method, not its display
            method = attr(obj, "_repr_mimebundle_")
            got = None
            if method is not None:
                try:
                    got = method(include=None, exclude=None)
                except Exception as exc:
                    note("_repr_mimebundle_ raised %s" % describe(exc))
            if isinstance(got, tuple) and len(got) == 2:
                got = got[0]
            if isinstance(got, dict):
                for mime, value in list(got.items()):
                    if not isinstance(mime, str) or mime not in allowed:
                        note("_repr_mimebundle_ gave an unknown MIME type %s; skipped (allowed: %s)" % (repr(mime)[:80] if isinstance(mime, str) else type(mime).__name__, ", ".join(allowed)))
                        continue
                    encoded = encode(mime, value, "_repr_mimebundle_")
                    if encoded is not None:
                        data[mime] = encoded
            elif got is not None:
                note("_repr_mimebundle_ returned %s, expected a dict; ignored" % type(got).__name__)
            for mime, name in reprs:
                method = None if mime in data else attr(obj, name)
                if method is None:
                    continue
                try:
                    value = method()
                except Exception as exc:
                    note("%s raised %s" % (name, describe(exc)))
                    continue
                if value is not None:  # None: the object has no such form
                    encoded = encode(mime, value, name)
                    if encoded is not None:
                        data[mime] = encoded
        if "text/plain" not in data:
            data["text/plain"] = repr(obj) if plain is None else plain
        return data

    def add(data, main):
        size = sum(len(v.encode("utf-8", "surrogatepass")) for v in data.values())
        if size > run["room"]:
            run["cut"] = True
            note("a result of %d bytes did not fit in the output limit (limits.outputBytes); dropped" % size)
            return
        run["room"] -= size
        result = {"data": data, "main": main}
        if emit is None or not emit(result):
            run["results"].append(result)

    def display(*objs, raw=False):
        """Show objects as rich results (HTML, images, JSON, ...) beside the run's output.
        raw=True: each object is already a dict of MIME type to data."""
        for obj in objs:
            if raw and isinstance(obj, dict):
                data = {}
                for mime, value in list(obj.items()):
                    if isinstance(mime, str) and mime in allowed:
                        encoded = encode(mime, value, "display(raw=True)")
                        if encoded is not None:
                            data[mime] = encoded
                    else:
                        note("display(raw=True) got an unknown MIME type; skipped (allowed: %s)" % ", ".join(allowed))
                if data:
                    add(data, False)
            else:
                add(bundle(obj), False)

    def begin(room):
        run.update(results=[], room=room, cut=False)

    def main_result(obj, plain):
        # The final expression's bundle is a result only when it has more than its repr.
        data = bundle(obj, plain)
        if len(data) > 1:
            add(data, True)

    def finish():
        show_figures()
        drawn.clear()
        results, cut = run["results"], run["cut"]
        run.update(results=[], room=0, cut=False)
        return results, cut

    return display, begin, main_result, finish
