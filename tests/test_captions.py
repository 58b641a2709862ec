"""Captioners: the offline signals captioner on real footage, and the VLM adapter against a real local
HTTP server that speaks the OpenAI chat-completions protocol the way vLLM does."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from wfm_platform import samples
from wfm_platform.curation.captions import (
    Caption,
    CaptionError,
    Captioner,
    OpenAIVLMCaptioner,
    SignalCaptioner,
    compose_caption,
    make_captioner,
)
from wfm_platform.video import fit_size, iter_frames, write_mp4

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.fixture(scope="session")
def footage_dir():
    return samples.fetch()


def need(footage_dir, name):
    path = footage_dir / name
    if not path.exists():
        pytest.skip(f"{name} not available (Debian footage needs apt-get)")
    return path


# --- offline signals captioner ---------------------------------------------------------------------

def test_handheld_and_static_camera_get_different_motion_phrases(footage_dir):
    cap = SignalCaptioner(detect_faces=False, ocr=False)
    handheld = cap.caption(need(footage_dir, "cockatoo.mp4"))
    static = cap.caption(need(footage_dir, "vtest.avi"), 0, 199)
    assert "shaky" in handheld.text.lower(), handheld.text
    assert "static camera" not in handheld.text.lower()
    assert "static camera with moving subjects" in static.text.lower(), static.text  # pedestrians walk
    assert "shaky" not in static.text.lower()
    h, s = handheld.details["signals"], static.details["signals"]
    assert h["shakiness"] > 10 * s["shakiness"]
    assert h["motion_mean"] > 10 * s["motion_mean"]
    assert handheld.captioner == static.captioner == "signals-v1"
    assert handheld.text.startswith("A 14.0-second landscape 1280x720")  # 280 frames at 20 fps
    assert static.text.startswith("A 20.0-second landscape 768x576")  # 200 frames at 10 fps


def test_burned_in_text_is_read_and_absent_text_is_not_invented(footage_dir, tmp_path):
    src = need(footage_dir, "bikes.mp4")
    frames = []
    for _, img in iter_frames(src, start=137, end=186):  # one shot of the real footage
        img = img.copy()
        cv2.putText(img, "SUNSET RIDE 2024", (60, 150), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (255, 255, 255), 4,
                    cv2.LINE_AA)
        frames.append(img)
    clip = tmp_path / "text.mp4"
    write_mp4(frames, clip, fps=25)

    cap = SignalCaptioner(detect_faces=False)
    with_text = cap.caption(clip)
    assert "on-screen text reads" in with_text.text, with_text.text
    read = with_text.details["signals"]["ocr_text"].upper().replace(" ", "")
    assert "SUNSETRIDE2024" in read, with_text.text

    plain = cap.caption(src, 137, 186)
    assert plain.details["signals"]["ocr_text"] == ""
    assert "on-screen text" not in plain.text, plain.text


def test_real_face_found_and_none_in_crowd_far_away(footage_dir):
    cap = SignalCaptioner(ocr=False)
    # carphone: a man talking in a car, his face fills a third of the frame.
    face = cap.caption(need(footage_dir, "carphone_pristine.mp4"))
    assert "one face visible" in face.text.lower(), face.text
    # vtest: pedestrians seen from far above; no frontal face is big enough.
    crowd = cap.caption(need(footage_dir, "vtest.avi"), 0, 99)
    assert "face" not in crowd.text.lower(), crowd.text
    # cockatoo: feathers trip the default cascade alone; the verification must keep it face-free.
    bird = cap.caption(need(footage_dir, "cockatoo.mp4"), 0, 99)
    assert bird.details["signals"]["faces"] == 0, bird.details["signals"]["faces_per_frame"]


def test_face_phrasing_for_counts():
    base = {"duration_s": 2.0, "width": 640, "height": 360, "brightness_mean": 120.0,
            "colours": {"grey": 1.0}}
    assert compose_caption({**base, "faces": 1}).endswith("grey. One face visible.")
    assert "three faces visible" in compose_caption({**base, "faces": 3}).lower()
    assert "about 5 faces visible" in compose_caption({**base, "faces": 5}).lower()
    assert "face" not in compose_caption({**base, "faces": 0}).lower()


def test_dark_version_of_a_clip_is_called_dark(footage_dir, tmp_path):
    src = need(footage_dir, "bikes.mp4")
    dark = tmp_path / "dark.mp4"
    darkened_frames = ((img * 0.15).astype(np.uint8) for _, img in iter_frames(src, start=187, end=241))
    write_mp4(darkened_frames, dark, fps=25)
    cap = SignalCaptioner(detect_faces=False, ocr=False)
    normal = cap.caption(src, 187, 241)
    darkened = cap.caption(dark)
    assert "dark" not in normal.text and "dim" not in normal.text, normal.text
    assert ", dark," in darkened.text, darkened.text
    assert darkened.details["signals"]["brightness_mean"] < 40 < normal.details["signals"]["brightness_mean"]
    # Real footage that is dark by itself (Megamind's night scene).
    real_dark = cap.caption(need(footage_dir, "Megamind.avi"), 0, 60)
    assert "dark" in real_dark.text, real_dark.text


def test_duration_follows_range_and_fps(footage_dir):
    cap = SignalCaptioner(n_frames=2, detect_faces=False, ocr=False)
    src = need(footage_dir, "bikes.mp4")
    c = cap.caption(src, 30, 75)  # 46 frames at 25 fps
    assert c.text.startswith("A 1.8-second landscape 640x272 clip"), c.text
    assert all(30 <= i <= 75 for i in c.frames_used)
    c10 = cap.caption(src, 30, 75, fps=10)
    assert c10.text.startswith("A 4.6-second"), c10.text
    assert cap.caption(src, 30, 75).text == c.text  # deterministic
    json.dumps(c.to_dict())  # details go into Dagster metadata / the catalog as JSON
    one = cap.caption(src, 40, 40)
    assert one.text.startswith("A 0.04-second") and one.text.endswith("A single frame."), one.text
    assert one.frames_used == [40]


def test_hints_are_used_instead_of_measuring(footage_dir):
    hints = {"duration_s": 3.0, "motion_mean": 0.08, "camera_pan_x": 0.06, "camera_pan_y": 0.0,
             "camera_zoom": 0.05, "shakiness": 0.01, "moving_area": 0.2, "ocr_text": "HELLO WORLD",
             "video_type": "animation", "brightness_mean": 0.9}
    cap = SignalCaptioner(n_frames=3, detect_faces=False)
    c = cap.caption(need(footage_dir, "bigbuckbunny.mp4"), 0, 74, hints=hints)
    assert c.text.startswith("A 3.0-second landscape 1280x720 animated clip, very bright"), c.text
    assert "camera pans left and zooms in" in c.text.lower(), c.text
    assert 'on-screen text reads "HELLO WORLD"' in c.text
    assert set(c.details["from_hints"]) >= {"motion_mean", "ocr_text", "video_type", "brightness_mean"}
    assert len(c.frames_used) == 3  # no motion frames decoded: the hints had them
    assert c.details["signals"]["motion_source"] == "hints"
    # A partial motion group (no moving_area) is measured here as a whole, not mixed with the hints.
    partial = {k: v for k, v in hints.items() if k != "moving_area"}
    c3 = cap.caption(need(footage_dir, "bigbuckbunny.mp4"), 0, 74, hints=partial)
    assert c3.details["signals"]["motion_source"] == "measured"
    assert "camera_pan_x" not in c3.details["from_hints"]
    assert "pans left" not in c3.text and len(c3.frames_used) > 3
    # Upstream OCR that found no text area: nothing to read, and no OCR run here.
    c2 = cap.caption(need(footage_dir, "bigbuckbunny.mp4"), 0, 74, hints={"text_area_ratio": 0.0})
    assert c2.details["signals"]["ocr_text"] == "" and "text_area_ratio" in c2.details["from_hints"]


def test_still_image_clip_has_no_motion(footage_dir, tmp_path):
    _, frame = next(iter_frames(need(footage_dir, "bikes.mp4"), start=140, end=140))
    still = tmp_path / "still.mp4"
    write_mp4([frame] * 20, still, fps=10)
    c = SignalCaptioner(detect_faces=False, ocr=False).caption(still)
    assert "static camera, no visible motion" in c.text.lower(), c.text


def test_broken_inputs_give_readable_errors(footage_dir, tmp_path):
    cap = SignalCaptioner(detect_faces=False, ocr=False)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(CaptionError, match="empty file"):
        cap.caption(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(CaptionError, match="cannot caption"):
        cap.caption(text)
    src = need(footage_dir, "bikes.mp4")
    with pytest.raises(CaptionError, match="past the last frame"):
        cap.caption(src, 0, 999)
    with pytest.raises(CaptionError, match="empty or negative frame range"):
        cap.caption(src, 50, 40)
    # Really corrupted frames: captioned from what decodes, not a crash.
    bugy = cap.caption(need(footage_dir, "Megamind_bugy.avi"))
    assert bugy.text.startswith("A ") and bugy.frames_used


def test_factory_and_protocol():
    assert isinstance(make_captioner("signals", n_frames=2), SignalCaptioner)
    vlm = make_captioner("openai", base_url="http://127.0.0.1:9/v1", model=MODEL)
    assert isinstance(vlm, OpenAIVLMCaptioner) and vlm.name == f"vlm:{MODEL}"
    assert isinstance(vlm, Captioner) and isinstance(SignalCaptioner(), Captioner)
    with pytest.raises(ValueError, match="unknown captioner kind"):
        make_captioner("clip")


# --- OpenAI-compatible VLM endpoint ----------------------------------------------------------------

class _VLMHandler(BaseHTTPRequestHandler):
    """A chat-completions endpoint that validates the request like vLLM and reports what it received."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload: bytes | dict, content_type: str = "application/json"):
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str):
        self._send(status, {"object": "error", "message": message, "type": "BadRequestError", "code": status})

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with srv.lock:
            srv.calls += 1
            call = srv.calls
            srv.auth_headers.append(self.headers.get("Authorization"))
        if self.path != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        if srv.mode == "unauthorized":
            return self._error(401, "Unauthorized: invalid API key")
        if srv.mode == "flaky" and call <= 2:
            return self._error(500, "CUDA out of memory, try again")
        if srv.mode == "garbage":
            return self._send(200, b"<html>502 Bad Gateway from a proxy</html>", "text/html")
        if srv.api_key and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
            return self._error(401, "missing or wrong bearer token")
        try:
            req = json.loads(body)
            answer = self._check(req)
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            return self._error(400, f"invalid request: {e}")
        content = "" if srv.mode == "empty" else answer
        self._send(200, {
            "id": f"chatcmpl-{call}", "object": "chat.completion", "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop" if content else "length"}],
            "usage": {"prompt_tokens": 100 * srv.expected_n, "completion_tokens": 12,
                      "total_tokens": 100 * srv.expected_n + 12},
        })

    def _check(self, req: dict) -> str:
        srv = self.server
        assert req["model"] == srv.expected_model, f"model {req['model']!r} does not exist"
        system, user = req["messages"]
        assert system["role"] == "system" and isinstance(system["content"], str) and system["content"]
        assert user["role"] == "user" and isinstance(user["content"], list)
        text, *images = user["content"]
        assert text["type"] == "text" and text["text"]
        assert len(images) == srv.expected_n, f"{len(images)} images, expected {srv.expected_n}"
        assert isinstance(req["max_tokens"], int) and 0 <= req["temperature"] <= 2
        report = []
        for part in images:
            assert part["type"] == "image_url"
            url = part["image_url"]["url"]
            prefix = "data:image/jpeg;base64,"
            assert url.startswith(prefix), "image_url must be a JPEG data URL"
            raw = base64.b64decode(url[len(prefix):], validate=True)
            assert raw[:2] == b"\xff\xd8", "not a JPEG"
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None, "undecodable JPEG"
            assert max(img.shape[:2]) <= srv.max_side, f"{img.shape[1]}x{img.shape[0]} over {srv.max_side}"
            report.append(f"{img.shape[1]}x{img.shape[0]}@{img.mean():.1f}")
        srv.prompts.append(text["text"])
        return f"received {len(images)} images: " + " ".join(report)


@pytest.fixture(scope="module")
def vlm_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _VLMHandler)
    srv.lock = threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(vlm_server):
    """The shared server, reset to a mode for one test."""

    def configure(mode="ok", n=4, max_side=448, api_key=None):
        vlm_server.mode, vlm_server.expected_n, vlm_server.max_side = mode, n, max_side
        vlm_server.expected_model, vlm_server.api_key = MODEL, api_key
        vlm_server.calls, vlm_server.prompts, vlm_server.auth_headers = 0, [], []
        return vlm_server, f"http://127.0.0.1:{vlm_server.server_address[1]}/v1"

    return configure


def test_vlm_sends_the_sampled_frames(footage_dir, server, monkeypatch):
    monkeypatch.delenv("WFM_VLM_API_KEY", raising=False)
    srv, url = server(n=4, max_side=448)
    src = need(footage_dir, "bikes.mp4")
    cap = OpenAIVLMCaptioner(url, MODEL, n_frames=4, max_side=448, include_signals=False)
    c = cap.caption(src, 30, 75)
    assert isinstance(c, Caption) and c.captioner == f"vlm:{MODEL}"
    assert c.text.startswith("received 4 images: ")
    assert len(c.frames_used) == 4 and c.frames_used[0] == 30 and c.frames_used[-1] <= 75
    # The server saw our frames: each size is the clip scaled to 448, and each mean matches the frame.
    w, h = fit_size(640, 272, 448)
    decoded = dict(iter_frames(src, start=30, end=75, size=(w, h)))
    for token, idx in zip(c.text.split(": ", 1)[1].split(), c.frames_used):
        size, mean = token.split("@")
        assert size == f"{w}x{h}"
        assert abs(float(mean) - decoded[idx].mean()) < 2.0  # JPEG keeps the mean
    assert c.details["usage"]["total_tokens"] == 412 and c.details["attempts"] == 1
    assert c.details["latency_ms"] >= 0 and srv.calls == 1
    assert srv.auth_headers == [None]  # no key, no header


def test_vlm_includes_measured_signals_and_bearer_key_from_env(footage_dir, server, monkeypatch):
    srv, url = server(n=2, max_side=256, api_key="sk-test-123")
    monkeypatch.setenv("WFM_VLM_API_KEY", "sk-test-123")
    cap = OpenAIVLMCaptioner(url, MODEL, n_frames=2, max_side=256, include_signals=True)
    hints = {"motion_mean": 0.01, "camera_pan_x": 0.0, "camera_pan_y": 0.0, "camera_zoom": 0.0,
             "shakiness": 0.0, "moving_area": 0.3, "ocr_text": "", "video_type": "natural"}
    c = cap.caption(need(footage_dir, "carphone_pristine.mp4"), hints=hints)
    assert c.text.startswith("received 2 images")
    prompt = srv.prompts[0]
    assert "Measured with classical computer vision" in prompt
    assert "4.0-second" in prompt and "one face visible" in prompt, prompt
    assert c.details["signals"]["text"] in prompt
    assert srv.auth_headers == ["Bearer sk-test-123"]


def test_vlm_retries_server_errors_then_succeeds(footage_dir, server):
    srv, url = server(mode="flaky", n=2)
    cap = OpenAIVLMCaptioner(url, MODEL, n_frames=2, include_signals=False, retries=3, backoff_s=0.01)
    c = cap.caption(need(footage_dir, "bikes.mp4"), 0, 29)
    assert c.text.startswith("received 2 images") and c.details["attempts"] == 3 and srv.calls == 3


def test_vlm_unauthorized_fails_at_once_with_advice(footage_dir, server):
    srv, url = server(mode="unauthorized", n=2)
    cap = OpenAIVLMCaptioner(url, MODEL, api_key="wrong", n_frames=2, include_signals=False, backoff_s=0.01)
    with pytest.raises(CaptionError) as err:
        cap.caption(need(footage_dir, "bikes.mp4"), 0, 29)
    msg = str(err.value)
    assert "HTTP 401" in msg and url in msg and "WFM_VLM_API_KEY" in msg
    assert srv.calls == 1  # a 4xx is not retried


def test_vlm_bad_request_reports_the_server_message(footage_dir, server):
    srv, url = server(n=3)  # the server expects 3 images; we send 2
    cap = OpenAIVLMCaptioner(url, MODEL, n_frames=2, include_signals=False, backoff_s=0.01)
    with pytest.raises(CaptionError, match=r"HTTP 400.*2 images, expected 3"):
        cap.caption(need(footage_dir, "bikes.mp4"), 0, 29)
    assert srv.calls == 1


def test_vlm_garbage_and_empty_answers(footage_dir, server):
    src = need(footage_dir, "bikes.mp4")
    _, url = server(mode="garbage", n=2)
    cap = OpenAIVLMCaptioner(url, MODEL, n_frames=2, include_signals=False, backoff_s=0.01)
    with pytest.raises(CaptionError, match="malformed JSON"):
        cap.caption(src, 0, 29)
    server(mode="empty", n=2)
    with pytest.raises(CaptionError, match="empty caption"):
        cap.caption(src, 0, 29)


def test_vlm_unreachable_server_is_retried_then_reported(footage_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = OpenAIVLMCaptioner(f"http://127.0.0.1:{port}/v1", MODEL, n_frames=1, include_signals=False,
                             retries=1, backoff_s=0.01, timeout_s=5)
    with pytest.raises(CaptionError, match=r"failed after 2 attempts: cannot connect"):
        cap.caption(need(footage_dir, "bikes.mp4"), 0, 29)
