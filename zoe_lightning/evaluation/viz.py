# Over 400 lines: every picture the project draws (panels, colour bars, bin and router figures) shares the colour, range and text helpers here.
"""Pure numpy / matplotlib visualisation helpers (no Lightning imports).

Everything here returns ``uint8`` RGB arrays of shape ``(H, W, 3)`` so callers can hand
them to any logger or write them to disk with :func:`save_png`.  Matplotlib is only used
through the object API (``Figure`` + ``FigureCanvasAgg``), so no GUI backend is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "to_numpy",
    "colorize",
    "image_to_uint8",
    "abs_rel_error_map",
    "signed_rel_error_map",
    "sample_abs_rel",
    "depth_range",
    "depth_panel",
    "colorbar_strip",
    "panel_layout",
    "labelled_depth_panel",
    "with_colorbar",
    "stack_panels",
    "figure_to_array",
    "bin_centers_figure",
    "confusion_figure",
    "save_png",
    "INVALID_COLOR",
]

INVALID_COLOR = (128, 128, 128)
DEPTH_CMAP = "magma_r"  # near = bright, far = dark
ERR_CMAP = "RdBu_r"  # signed relative error: blue = too near, white = right, red = too far
ERR_MAX = 0.5  # the error colour bar spans -50 % .. +50 %
COLUMN_TITLES = ("image", "ground truth", "prediction", "error (pred - gt) / gt")


def to_numpy(x: Any) -> np.ndarray:
    """Convert a tensor / array-like to a numpy array on the CPU (bool kept, floats as float32)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch at module level
        x = x.detach()
        if x.dtype.is_floating_point:
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


def _squeeze_2d(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (H, W) (optionally with leading singleton dims), got {arr.shape}")
    return arr


def _get_cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _scalar(v: Any) -> float:
    if hasattr(v, "detach"):
        return float(v.detach().float().cpu().reshape(-1)[0].item())
    return float(np.asarray(v, dtype=np.float64).reshape(-1)[0])


def colorize(
    depth: Any,
    vmin: float,
    vmax: float,
    cmap: str = "magma_r",
    invalid_mask: Any = None,
    invalid_color: Sequence[int] = INVALID_COLOR,
) -> np.ndarray:
    """Map a 2-D depth map to ``uint8 (H, W, 3)`` with a fixed ``[vmin, vmax]`` range.

    Values are clipped to the range, so ``vmin`` gets ``cmap(0.0)`` and ``vmax`` gets
    ``cmap(1.0)`` (rounded to the nearest byte).  Pixels where ``invalid_mask`` is true,
    and non-finite pixels, get ``invalid_color``.
    """
    d = _squeeze_2d(depth, "depth").astype(np.float64)
    lo, hi = _scalar(vmin), _scalar(vmax)
    if not np.isfinite(lo):
        lo = 0.0
    if not np.isfinite(hi) or hi <= lo:
        hi = lo + 1e-6
    invalid = ~np.isfinite(d)
    if invalid_mask is not None:
        m = _squeeze_2d(invalid_mask, "invalid_mask").astype(bool)
        if m.shape != d.shape:
            raise ValueError(f"invalid_mask shape {m.shape} != depth shape {d.shape}")
        invalid |= m
    x = np.clip((np.where(invalid, lo, d) - lo) / (hi - lo), 0.0, 1.0)
    rgba = _get_cmap(cmap)(x)  # float (H, W, 4) in [0, 1]
    rgb = np.clip(np.round(rgba[..., :3] * 255.0), 0, 255).astype(np.uint8)
    rgb[invalid] = np.asarray(invalid_color, dtype=np.uint8)[:3]
    return rgb


def image_to_uint8(image: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB image ``(3, H, W)`` or ``(H, W, 3)``, float in [0, 1] or uint8 -> ``uint8 (H, W, 3)``.

    ``size=(H, W)`` resizes (bilinear) when the image has a different resolution.
    """
    arr = to_numpy(image)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (3,H,W) or (H,W,3), got {to_numpy(image).shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(np.nan_to_num(arr.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        from PIL import Image

        arr = np.asarray(Image.fromarray(arr).resize((int(size[1]), int(size[0])), Image.BILINEAR))
    return np.ascontiguousarray(arr)


def abs_rel_error_map(gt: Any, pred: Any, valid: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(|pred - gt| / gt, valid_mask)`` as float arrays; pixels with gt <= 0 are invalid."""
    err, ok = signed_rel_error_map(gt, pred, valid)
    return np.abs(err), ok


def signed_rel_error_map(gt: Any, pred: Any, valid: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``((pred - gt) / gt, valid_mask)``: negative where the prediction is too near,
    positive where it is too far; pixels with gt <= 0 (or not ``valid``) are invalid (value 0)."""
    g = _squeeze_2d(gt, "gt").astype(np.float64)
    p = _squeeze_2d(pred, "pred").astype(np.float64)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}")
    ok = np.isfinite(g) & np.isfinite(p) & (g > 0)
    if valid is not None:
        ok &= _squeeze_2d(valid, "valid").astype(bool)
    err = np.zeros_like(g)
    np.divide(p - g, g, out=err, where=ok)
    return err, ok


def sample_abs_rel(gt: Any, pred: Any, valid: Any = None) -> float:
    """Mean ``|pred - gt| / gt`` over the valid pixels of one sample (NaN when none is valid)."""
    err, ok = abs_rel_error_map(gt, pred, valid)
    return float(err[ok].mean()) if ok.any() else float("nan")


def depth_range(min_depth: Any = None, max_depth: Any = None, gt: Any = None, valid: Any = None) -> tuple[float, float]:
    """The colour range ``(vmin, vmax)`` of ground truth and prediction in depth panels.

    The one rule used by the training panels and ``eval --panels``: ``0`` to the sample's
    domain ``max_depth`` (its evaluation range), so colours mean the same depth in every panel
    of a domain, at every step and in evaluation.  ``min_depth`` is accepted for symmetry and
    ignored (it is close to 0 for every dataset).  Without a finite ``max_depth`` the largest
    valid ground-truth depth is used, else ``1.0``.
    """
    hi = None if max_depth is None else _scalar(max_depth)
    if hi is None or not np.isfinite(hi) or hi <= 0:
        hi = None
        if gt is not None:
            g = to_numpy(gt).astype(np.float64)
            ok = np.isfinite(g) & (g > 0)
            if valid is not None:
                ok &= to_numpy(valid).astype(bool).reshape(g.shape)
            if ok.any():
                hi = float(g[ok].max())
        hi = hi if hi is not None else 1.0
    return 0.0, float(hi)


def depth_panel(
    image: Any,
    gt: Any,
    pred: Any,
    valid: Any,
    vmin: float,
    vmax: float,
    cmap: str = DEPTH_CMAP,
    err_cmap: str = ERR_CMAP,
    err_max: float = ERR_MAX,
    invalid_color: Sequence[int] = INVALID_COLOR,
) -> np.ndarray:
    """``uint8 (H, 4W, 3)`` tiles: image | GT (invalid grey) | prediction | signed relative error.

    GT and prediction share the fixed ``[vmin, vmax]`` range and ``cmap``; the error tile shows
    ``(pred - gt) / gt`` with the diverging ``err_cmap`` on ``[-err_max, err_max]`` (centre =
    exact), invalid GT pixels grey.  The image is resized to the GT resolution if needed.
    """
    g = _squeeze_2d(gt, "gt")
    h, w = g.shape
    v = np.ones((h, w), dtype=bool) if valid is None else _squeeze_2d(valid, "valid").astype(bool)
    v = v & np.isfinite(g) & (g > 0)
    img = image_to_uint8(image, size=(h, w))
    gt_rgb = colorize(g, vmin, vmax, cmap=cmap, invalid_mask=~v, invalid_color=invalid_color)
    pred_rgb = colorize(pred, vmin, vmax, cmap=cmap)
    err, ok = signed_rel_error_map(g, pred, v)
    err_rgb = colorize(err, -err_max, err_max, cmap=err_cmap, invalid_mask=~ok, invalid_color=invalid_color)
    return np.concatenate([img, gt_rgb, pred_rgb, err_rgb], axis=1)


# ----------------------------------------------------------------------------- annotated panels
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType sizes
        return ImageFont.load_default()


def _text_width(draw, text: str, font) -> float:
    return draw.textlength(text, font=font)


def _fit(draw, text: str, font, width: float) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "...", font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def _ticks(vmin: float, vmax: float, n: int = 5) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    vals = MaxNLocator(nbins=n).tick_values(vmin, vmax)
    eps = 1e-9 * max(1.0, abs(vmax - vmin))
    return [float(t) for t in vals if vmin - eps <= t <= vmax + eps]


def _tick_label(t: float, percent: bool) -> str:
    if percent:
        return f"{t * 100:+.0f}%" if abs(t) > 1e-12 else "0"
    return f"{t:g}"


def colorbar_strip(
    width: int,
    vmin: float,
    vmax: float,
    cmap: str = DEPTH_CMAP,
    label: str = "depth [m]",
    font_size: int = 12,
    percent: bool = False,
    margin: int | None = None,
) -> np.ndarray:
    """``uint8 (h, width, 3)`` white strip with a horizontal colour bar from ``vmin`` (left) to
    ``vmax`` (right), tick labels (metres, or percent with ``percent=True``) and ``label``."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    margin = max(font_size, width // 16) if margin is None else margin
    bar_h = max(6, font_size)
    height = int(bar_h + 2.6 * font_size + 10)
    canvas = Image.new("RGB", (int(width), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x0, x1 = margin, max(margin + 2, int(width) - margin)
    ramp = np.linspace(0.0, 1.0, x1 - x0)
    row = np.clip(np.round(_get_cmap(cmap)(ramp)[:, :3] * 255.0), 0, 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(row[None], bar_h, axis=0)), (x0, 2))
    draw.rectangle([x0 - 1, 1, x1, 2 + bar_h], outline=(0, 0, 0))
    span = (vmax - vmin) or 1.0
    for t in _ticks(vmin, vmax, 5 if x1 - x0 >= 12 * font_size else 2):
        x = x0 + (t - vmin) / span * (x1 - 1 - x0)
        draw.line([(x, 2 + bar_h), (x, 5 + bar_h)], fill=(0, 0, 0))
        draw.text((x, 6 + bar_h), _tick_label(t, percent), fill=(0, 0, 0), font=font, anchor="ma")
    draw.text((width / 2, 8 + bar_h + 1.3 * font_size), _fit(draw, label, font, width - 4), fill=(0, 0, 0),
              font=font, anchor="ma")
    return np.asarray(canvas, dtype=np.uint8).copy()


def panel_layout(h: int, w: int, min_tile_width: int = 160) -> dict:
    """Geometry of :func:`labelled_depth_panel` for ``(h, w)`` tiles: integer up-scaling ``scale``
    (small images are enlarged so text fits), tile size, font size, and the rows ``top`` (first
    tile row) and ``bottom`` (first row below the tiles)."""
    scale = max(1, -(-int(min_tile_width) // int(w)))
    tw, th = int(w) * scale, int(h) * scale
    fs = int(np.clip(tw // 14, 11, 22))
    top = int(round(2 * 1.5 * fs)) + 4
    return {"scale": scale, "tile_w": tw, "tile_h": th, "font_size": fs, "top": top, "bottom": top + th}


def labelled_depth_panel(
    image: Any,
    gt: Any,
    pred: Any,
    valid: Any,
    vmin: float,
    vmax: float,
    header: str = "",
    cmap: str = DEPTH_CMAP,
    err_cmap: str = ERR_CMAP,
    err_max: float = ERR_MAX,
    titles: Sequence[str] = COLUMN_TITLES,
    min_tile_width: int = 160,
) -> np.ndarray:
    """:func:`depth_panel` made to stand alone: a ``header`` line (dataset / domain / step /
    metric), a title over each column, a colour bar in metres under ground truth and prediction
    (their shared range) and one in percent under the error tile, with the legend of grey.

    Tiles keep their pixels (enlarged by an integer factor when narrower than
    ``min_tile_width``); the result is ``4 * tile_w`` wide.  See :func:`panel_layout`."""
    from PIL import Image, ImageDraw

    tiles = depth_panel(image, gt, pred, valid, vmin, vmax, cmap=cmap, err_cmap=err_cmap, err_max=err_max)
    h, w = tiles.shape[0], tiles.shape[1] // 4
    lay = panel_layout(h, w, min_tile_width)
    s, tw, th, fs = lay["scale"], lay["tile_w"], lay["tile_h"], lay["font_size"]
    if s > 1:
        tiles = np.repeat(np.repeat(tiles, s, axis=0), s, axis=1)
    width = 4 * tw
    font = _font(fs)
    head = Image.new("RGB", (width, lay["top"]), (255, 255, 255))
    draw = ImageDraw.Draw(head)
    draw.text((4, 2), _fit(draw, header, font, width - 8), fill=(0, 0, 0), font=font)
    for k, title in enumerate(titles[:4]):
        draw.text((k * tw + tw / 2, lay["top"] - 2), _fit(draw, title, font, tw - 4), fill=(0, 0, 0),
                  font=font, anchor="md")
    depth_bar = colorbar_strip(2 * tw, vmin, vmax, cmap, "depth [m] (ground truth and prediction)", fs)
    err_bar = colorbar_strip(tw, -err_max, err_max, err_cmap, "blue: too near, red: too far", fs, percent=True)
    foot = Image.new("RGB", (width, depth_bar.shape[0]), (255, 255, 255))
    foot.paste(Image.fromarray(depth_bar), (tw, 0))
    foot.paste(Image.fromarray(err_bar), (3 * tw, 0))
    fdraw = ImageDraw.Draw(foot)
    fdraw.rectangle([6, 4, 6 + fs, 4 + fs], fill=INVALID_COLOR, outline=(0, 0, 0))
    fdraw.text((10 + fs, 4), _fit(fdraw, "no ground truth", font, tw - 16 - fs), fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(head, dtype=np.uint8), tiles, np.asarray(foot, dtype=np.uint8)], axis=0)


def with_colorbar(rgb: np.ndarray, vmin: float, vmax: float, cmap: str = DEPTH_CMAP,
                  label: str = "depth [m]") -> np.ndarray:
    """``rgb`` (a colourised depth map) with a colour bar strip of its range appended below."""
    fs = int(np.clip(rgb.shape[1] // 40, 11, 22))
    bar = colorbar_strip(rgb.shape[1], vmin, vmax, cmap, label, fs)
    return np.concatenate([np.asarray(rgb, dtype=np.uint8), bar], axis=0)


def stack_panels(panels: Sequence[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Stack ``uint8 (H_i, W_i, 3)`` panels vertically, right-padding narrower ones."""
    if not panels:
        raise ValueError("no panels to stack")
    width = max(p.shape[1] for p in panels)
    rows = []
    for i, p in enumerate(panels):
        if p.shape[1] < width:
            pad = np.full((p.shape[0], width - p.shape[1], 3), fill, dtype=np.uint8)
            p = np.concatenate([p, pad], axis=1)
        rows.append(p)
        if gap and i < len(panels) - 1:
            rows.append(np.full((gap, width, 3), fill, dtype=np.uint8))
    return np.concatenate(rows, axis=0)


def figure_to_array(fig) -> np.ndarray:
    """Render a ``matplotlib.figure.Figure`` with the Agg canvas -> ``uint8 (H, W, 3)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()


def _new_figure(figsize: tuple[float, float], dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def bin_centers_figure(
    centers: Any,
    gt_depth: Any = None,
    valid: Any = None,
    gt_center: float | None = None,
    pred_center: float | None = None,
    max_depth: float | None = None,
    title: str | None = None,
    n_hist_bins: int = 50,
) -> np.ndarray:
    """Plot sorted bin centres vs. bin index next to a histogram of valid GT depths.

    ``centers``: 1-D array of the N bin centres at one pixel.  Optional horizontal lines show
    the GT / predicted depth at that pixel.  Returns ``uint8 (H, W, 3)``.
    """
    c = np.sort(to_numpy(centers).astype(np.float64).reshape(-1))
    fig = _new_figure((9.0, 3.6))
    ax0, ax1 = fig.subplots(1, 2)
    ax0.plot(np.arange(len(c)), c, marker="o", markersize=3, linewidth=1, label="bin centres")
    if gt_center is not None and np.isfinite(gt_center) and gt_center > 0:
        ax0.axhline(gt_center, color="tab:green", linestyle="--", linewidth=1, label=f"GT {gt_center:.2f} m")
    if pred_center is not None and np.isfinite(pred_center):
        ax0.axhline(pred_center, color="tab:red", linestyle=":", linewidth=1, label=f"pred {pred_center:.2f} m")
    ax0.set_xlabel("bin index (sorted)")
    ax0.set_ylabel("depth [m]")
    ax0.set_title("bin centres at image centre")
    ax0.grid(True, alpha=0.3)
    ax0.legend(fontsize=7, loc="upper left")

    hist_vals = np.empty(0)
    if gt_depth is not None:
        g = to_numpy(gt_depth).astype(np.float64).reshape(-1)
        ok = np.isfinite(g) & (g > 0)
        if valid is not None:
            ok &= to_numpy(valid).astype(bool).reshape(-1)
        hist_vals = g[ok]
    if hist_vals.size:
        hi = max_depth if max_depth is not None and np.isfinite(max_depth) else float(hist_vals.max())
        hi = max(hi, float(c.max()) if c.size else hi)
        ax1.hist(hist_vals, bins=n_hist_bins, range=(0.0, hi), color="tab:blue", alpha=0.8)
    else:
        ax1.text(0.5, 0.5, "no valid GT", ha="center", va="center", transform=ax1.transAxes)
    if c.size:
        # rug of the bin centres along the bottom of the histogram
        ax1.plot(c, np.zeros_like(c), "|", color="tab:orange", markersize=12, label="bin centres")
        ax1.legend(fontsize=7, loc="upper right")
    ax1.set_xlabel("GT depth [m]")
    ax1.set_ylabel("pixels")
    ax1.set_title("GT depth histogram")
    if title:
        fig.suptitle(title, fontsize=9)
    return figure_to_array(fig)


def confusion_figure(matrix: Any, names: Sequence[str], title: str | None = None) -> np.ndarray:
    """Heat map of a DxD confusion matrix (rows = label, cols = head used) with counts."""
    m = to_numpy(matrix).astype(np.int64)
    d = m.shape[0]
    size = 1.2 + 0.9 * d
    fig = _new_figure((size + 1.0, size))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, int(m.max())))
    ax.set_xticks(range(d), labels=list(names), rotation=45, ha="right")
    ax.set_yticks(range(d), labels=list(names))
    ax.set_xlabel("head used")
    ax.set_ylabel("domain label")
    thresh = m.max() / 2.0 if m.size else 0
    for i in range(d):
        for j in range(m.shape[1]):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                    color="white" if m[i, j] > thresh else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    return figure_to_array(fig)


def save_png(array: Any, path: str | Path) -> Path:
    """Write a ``uint8 (H, W, 3)`` (or ``(H, W)``) array as PNG, creating parent dirs."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_numpy(array)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")
    return path
