"""Look at one episode: a self-contained HTML page, or an MP4 with an overlay.

The page embeds everything (JPEG frames as base64, inline SVG, a few lines of script), so
it can be mailed or attached to an issue and opened offline: camera frames with a slider
and a play button, a timeline with intervention (operator) and held spans, the outcome and
truncated badges, task and policy version, and executed vs proposed action per dimension.
Frames are subsampled to at most `max_frames` per camera to keep the page small; the
timeline and plots keep every step.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from robot_runtime.episode import Episode

COLORS = {"intervention": "#e8590c", "held": "#868e96", "success": "#2b8a3e", "failure": "#c92a2a",
          "unlabeled": "#5c677d", "executed": "#1c7ed6", "proposed": "#ae3ec9"}


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) step ranges where `mask` is true."""
    mask = np.asarray(mask, bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], mask, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _jpeg_base64(image: np.ndarray, quality: int) -> str:
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return base64.b64encode(data.tobytes()).decode("ascii")


def _span_rects(mask, steps: int, css: str, height: float, width: float = 1000.0) -> str:
    scale = width / max(steps, 1)
    return "".join(f'<rect class="{css}" x="{a * scale:.2f}" y="0" width="{(b - a) * scale:.2f}" '
                   f'height="{height}" data-start="{a}" data-end="{b}"/>' for a, b in spans(mask))


def _polylines(values: np.ndarray, low: float, high: float, css: str, height: float, width: float = 1000.0) -> str:
    """One polyline per run of finite values (NaN = no policy ran: a gap). Step k is drawn at the
    middle of its cell [k, k + 1) of the shared x axis, where the span rectangles also live."""
    steps = len(values)
    x = (np.arange(steps) + 0.5) * (width / max(steps, 1))
    y = height - (values - low) / (high - low) * height
    out = []
    for a, b in spans(np.isfinite(values)):
        points = " ".join(f"{x[i]:.1f},{y[i]:.1f}" for i in range(a, b))
        if b - a == 1:  # a lone value still shows
            out.append(f'<circle class="{css}" cx="{x[a]:.1f}" cy="{y[a]:.1f}" r="2"/>')
        else:
            out.append(f'<polyline class="{css}" points="{points}"/>')
    return "".join(out)


def _plot(name: str, executed: np.ndarray, proposed: np.ndarray, intervention: np.ndarray) -> str:
    height = 120.0
    finite = np.concatenate([executed[np.isfinite(executed)], proposed[np.isfinite(proposed)]])
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    pad = (high - low) * 0.08 or 1.0
    low, high = low - pad, high + pad
    return (f'<div class="plot"><div class="plot-title">{html.escape(name)} '
            f'<span class="range">[{low + pad:.3g}, {high - pad:.3g}]</span></div>'
            f'<svg class="action-plot" data-dim="{html.escape(name)}" viewBox="0 0 1000 {height:.0f}" '
            f'preserveAspectRatio="none">'
            + _span_rects(intervention, len(executed), "intervention-bg", height)
            + _polylines(executed, low, high, "executed", height)
            + _polylines(proposed, low, high, "proposed", height)
            + f'<line class="cursor" x1="0" x2="0" y1="0" y2="{height:.0f}"/></svg></div>')


def episode_html(episode: Episode, max_frames: int = 150, jpeg_quality: int = 80) -> str:
    """The viewer page of one episode, as a string."""
    meta, steps = episode.meta, episode.steps
    intervention, held = episode.array("intervention"), episode.array("held")
    action, proposed = episode.array("action"), episode.array("policy_action")
    timestamps = episode.array("timestamp")
    stride = max(1, -(-steps // max_frames))
    frame_steps = list(range(0, steps, stride))
    frames = {cam: [_jpeg_base64(img, jpeg_quality) for img in episode.images(cam)[frame_steps]]
              for cam in episode.layout.cameras}
    outcome = meta.get("outcome", "unlabeled")
    badges = f'<span id="outcome" class="badge outcome-{html.escape(outcome)}">{html.escape(outcome)}</span>'
    if meta.get("truncated"):
        badges += '<span id="truncated" class="badge truncated">truncated</span>'
    duration = float(timestamps[-1] - timestamps[0]) if steps else 0.0
    rows = {"task": meta.get("task", ""), "policy-version": meta.get("policy_version") or "(none)",
            "robot": meta.get("robot_id", ""), "operator": meta.get("operator", ""),
            "campaign": (meta.get("extra") or {}).get("campaign", ""),
            "steps": f"{steps} at {meta.get('control_rate_hz', 0):g} Hz, {duration:.2f} s",
            "interventions": f"{intervention.mean() * 100 if steps else 0:.1f}% of steps, "
                             f"{len(spans(intervention))} span(s); held {int(held.sum())} step(s)",
            "end-reason": meta.get("end_reason", "")}
    details = "".join(f'<dt>{k.replace("-", " ")}</dt><dd id="{k}">{html.escape(str(v))}</dd>' for k, v in rows.items())
    cameras = "".join(
        f'<figure><img id="frame-{html.escape(cam)}" class="frame" alt="{html.escape(cam)}" '
        f'src="data:image/jpeg;base64,{imgs[0] if imgs else ""}"><figcaption>{html.escape(cam)}</figcaption></figure>'
        for cam, imgs in frames.items())
    timeline = ('<svg id="timeline" viewBox="0 0 1000 24" preserveAspectRatio="none">'
                '<rect class="track" x="0" y="0" width="1000" height="24"/>'
                + _span_rects(intervention, steps, "intervention", 24) + _span_rects(held, steps, "held", 24)
                + '<line class="cursor" x1="0" x2="0" y1="0" y2="24"/></svg>')
    plots = "".join(_plot(name, action[:, i], proposed[:, i], intervention)
                    for i, name in enumerate(episode.layout.action_names))
    data = {"steps": steps, "rate": float(meta.get("control_rate_hz") or 10.0), "frame_steps": frame_steps,
            "frames": frames, "t": [round(float(t - timestamps[0]), 4) for t in timestamps],
            "intervention": intervention.astype(int).tolist(), "held": held.astype(int).tolist()}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(f"{episode.episode_id} ({outcome})")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 16px; color: #212529; }}
h1 {{ font-size: 18px; margin: 0 8px 8px 0; display: inline-block; }}
.badge {{ display: inline-block; padding: 2px 8px; border-radius: 4px; color: #fff; margin-right: 6px; }}
.outcome-success {{ background: {COLORS['success']}; }} .outcome-failure {{ background: {COLORS['failure']}; }}
.outcome-unlabeled {{ background: {COLORS['unlabeled']}; }} .truncated {{ background: #f08c00; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 8px 0; }}
dt {{ color: #868e96; }} dd {{ margin: 0; }}
#cameras {{ display: flex; gap: 12px; flex-wrap: wrap; }} figure {{ margin: 0; }}
.frame {{ height: 240px; image-rendering: pixelated; border: 4px solid transparent; }}
.frame.operator {{ border-color: {COLORS['intervention']}; }} .frame.held {{ border-color: {COLORS['held']}; }}
#controls {{ display: flex; gap: 12px; align-items: center; margin: 8px 0; }} #slider {{ flex: 1; }}
svg {{ width: 100%; display: block; }} #timeline {{ height: 24px; }}
.track {{ fill: #e9ecef; }} .intervention {{ fill: {COLORS['intervention']}; }} .held {{ fill: {COLORS['held']}; }}
.intervention-bg {{ fill: {COLORS['intervention']}; opacity: 0.15; }}
.cursor {{ stroke: #000; stroke-width: 2; vector-effect: non-scaling-stroke; }}
.action-plot {{ height: 120px; background: #f8f9fa; }}
polyline {{ fill: none; stroke-width: 1.5; vector-effect: non-scaling-stroke; }}
polyline.executed {{ stroke: {COLORS['executed']}; }} circle.executed {{ fill: {COLORS['executed']}; }}
polyline.proposed {{ stroke: {COLORS['proposed']}; stroke-dasharray: 4 3; }}
circle.proposed {{ fill: {COLORS['proposed']}; }}
.plot {{ margin: 6px 0; }} .plot-title {{ font-weight: 600; }} .range {{ color: #868e96; font-weight: 400; }}
.legend span {{ margin-right: 14px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin-right: 4px; }}
</style></head>
<body>
<header><h1 id="episode-id">{html.escape(episode.episode_id)}</h1>{badges}<dl id="meta">{details}</dl></header>
<section id="cameras">{cameras}</section>
<div id="controls"><button id="play" type="button">Play</button>
<input id="slider" type="range" min="0" max="{max(steps - 1, 0)}" value="0" step="1"><span id="step-label"></span></div>
{timeline}
<div class="legend">
<span><i class="swatch" style="background:{COLORS['intervention']}"></i>intervention (operator)</span>
<span><i class="swatch" style="background:{COLORS['held']}"></i>held</span>
<span><i class="swatch" style="background:{COLORS['executed']}"></i>executed action</span>
<span><i class="swatch" style="background:{COLORS['proposed']}"></i>policy proposal (dashed; gap: no policy)</span>
</div>
<section id="plots">{plots}</section>
<script type="application/json" id="episode-data">{payload}</script>
<script>
(function () {{
  const d = JSON.parse(document.getElementById("episode-data").textContent);
  const slider = document.getElementById("slider"), label = document.getElementById("step-label");
  const play = document.getElementById("play"), cursors = document.querySelectorAll(".cursor");
  let timer = null;
  function frameIndex(k) {{  // the last kept frame at or before step k
    let i = 0;
    while (i + 1 < d.frame_steps.length && d.frame_steps[i + 1] <= k) i++;
    return i;
  }}
  function show(k) {{
    const i = frameIndex(k), x = (k + 0.5) * 1000 / d.steps;
    for (const cam in d.frames) {{
      const img = document.getElementById("frame-" + cam);
      img.src = "data:image/jpeg;base64," + d.frames[cam][i];
      img.classList.toggle("operator", !!d.intervention[k]); img.classList.toggle("held", !!d.held[k]);
    }}
    cursors.forEach(function (c) {{ c.setAttribute("x1", x); c.setAttribute("x2", x); }});
    label.textContent = "step " + k + " / " + (d.steps - 1) + "  t=" + d.t[k].toFixed(2) + " s" +
      (d.intervention[k] ? "  OPERATOR" : "") + (d.held[k] ? "  HELD" : "");
  }}
  slider.addEventListener("input", function () {{ show(+slider.value); }});
  play.addEventListener("click", function () {{
    if (timer) {{ clearInterval(timer); timer = null; play.textContent = "Play"; return; }}
    if (+slider.value >= d.steps - 1) slider.value = 0;
    play.textContent = "Pause";
    timer = setInterval(function () {{
      if (+slider.value >= d.steps - 1) {{ clearInterval(timer); timer = null; play.textContent = "Play"; return; }}
      slider.value = +slider.value + 1; show(+slider.value);
    }}, 1000 / d.rate);
  }});
  const start = location.hash.match(/step=(\\d+)/);  // e.g. episode.html#step=40
  slider.value = start ? Math.min(+start[1], d.steps - 1) : 0;
  show(+slider.value);
}})();
</script>
</body></html>
"""


def write_html(episode: Episode, path: str | Path, **options) -> Path:
    path = Path(path)
    path.write_text(episode_html(episode, **options), encoding="utf-8")
    return path


def write_mp4(episode: Episode, path: str | Path, fps: float | None = None, min_height: int = 240) -> Path:
    """An MP4 (mp4v) of the cameras side by side, every step one frame, with a banner (step, time,
    OPERATOR/HELD, outcome), an orange border on intervention steps and a timeline strip."""
    import cv2

    path = Path(path)
    steps, meta = episode.steps, episode.meta
    if steps == 0:
        raise ValueError(f"{episode.path}: no steps to render")
    intervention, held = episode.array("intervention"), episode.array("held")
    timestamps = episode.array("timestamp")
    cameras = {cam: episode.images(cam) for cam in episode.layout.cameras}
    height = max([min_height] + [h for h, _ in episode.layout.cameras.values()])
    widths = {cam: int(round(w * height / h)) for cam, (h, w) in episode.layout.cameras.items()}
    width = max(sum(widths.values()), 320)
    width += width % 2
    banner, strip = 28, 10
    total = height + banner + strip
    total += total % 2
    fps = fps or float(meta.get("control_rate_hz") or 10.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, total))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an mp4v writer here")
    bgr = {name: tuple(int(COLORS[name][i:i + 2], 16) for i in (5, 3, 1)) for name in COLORS}
    outcome = str(meta.get("outcome", "unlabeled")) + (" (truncated)" if meta.get("truncated") else "")
    track = np.full((strip, width, 3), 230, np.uint8)
    for a, b in spans(intervention):
        track[:, a * width // steps: max(b * width // steps, a * width // steps + 1)] = bgr["intervention"]
    for a, b in spans(held):
        track[:, a * width // steps: max(b * width // steps, a * width // steps + 1)] = bgr["held"]
    font = cv2.FONT_HERSHEY_SIMPLEX
    try:
        for k in range(steps):
            canvas = np.zeros((total, width, 3), np.uint8)
            x = 0
            for cam, images in cameras.items():
                view = cv2.resize(images[k][:, :, ::-1], (widths[cam], height), interpolation=cv2.INTER_NEAREST)
                canvas[banner:banner + height, x:x + widths[cam]] = view
                x += widths[cam]
            if intervention[k] or held[k]:
                color = bgr["intervention"] if intervention[k] else bgr["held"]
                cv2.rectangle(canvas, (2, banner + 2), (width - 3, banner + height - 3), color, 4)
            cv2.putText(canvas, f"{k}/{steps - 1} t={timestamps[k] - timestamps[0]:.2f}s", (6, 19), font, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            if intervention[k] or held[k]:
                tag = "OPERATOR" if intervention[k] else "HELD"
                cv2.putText(canvas, tag, (150, 19), font, 0.5, bgr["intervention" if intervention[k] else "held"],
                            2, cv2.LINE_AA)
            (tw, _), _ = cv2.getTextSize(outcome, font, 0.5, 1)
            cv2.putText(canvas, outcome, (width - tw - 6, 19), font, 0.5,
                        bgr.get(meta.get("outcome"), bgr["unlabeled"]), 2, cv2.LINE_AA)
            canvas[banner + height:banner + height + strip] = track
            cursor = min(k * width // steps, width - 2)
            canvas[banner + height:banner + height + strip, cursor:cursor + 2] = 0
            writer.write(canvas)
    finally:
        writer.release()
    return path
