"""The official `openai` SDK from PyPI, unchanged, against the resident server (CPU stand-in
pipeline): `client.videos.create/retrieve/list/download_content/delete` as a Python user calls
them, and bad input through the SDK and raw HTTP getting the SDK's own exception classes.
"""

from __future__ import annotations

import socket
import time

import openai
import pytest

from tests.test_server import Server, image_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its Videos API so

KEY = "sdk-test-key"


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("sdk"), env={"WAN22_API_KEY": KEY},
               args=("--max-image-mb", "1", "--max-body-mb", "2")).start()
    yield s
    assert s.stop() == 0, s.logtext()


@pytest.fixture(scope="module")
def ti2v(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("sdk-ti2v"), task="ti2v-5B", env={"WAN22_API_KEY": KEY}).start()
    yield s
    assert s.stop() == 0, s.logtext()


def client(server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api.base + "/v1", api_key=key, max_retries=0)


def until_done(c: openai.OpenAI, video_id: str, timeout: float = 30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        video = c.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        time.sleep(0.02)
    raise AssertionError(f"{video_id} still {video.status}")


def test_create_retrieve_download_delete(t2v):
    c = client(t2v)
    video = c.videos.create(prompt="a red fox in snow", model="t2v-A14B", seconds="2", size="832x480",
                            extra_body={"sample_steps": 3, "seed": 7})
    assert isinstance(video, openai.types.Video) and video.object == "video" and video.id.startswith("video_")
    assert video.status in ("queued", "in_progress") and video.model == "t2v-A14B" and video.size == "832x480"
    assert video.seconds == "2" and 0 <= video.progress < 100 and video.created_at > 1e9
    assert video.model_extra["params"]["frame_num"] == 33  # 2 s at 16 fps: the 4n+1 nearest 32

    done = until_done(c, video.id)
    assert done.status == "completed" and done.progress == 100 and done.completed_at >= done.created_at
    assert done.error is None and done.model_extra["seed"] == 7 and done.model_extra["progress_detail"]["step"] == 3

    content = c.videos.download_content(video.id)
    data = content.read()
    assert data[4:8] == b"ftyp" and content.response.headers["content-type"] == "video/mp4"
    with pytest.raises(openai.NotFoundError, match="variant"):
        c.videos.download_content(video.id, variant="thumbnail")

    deleted = c.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        c.videos.retrieve(video.id)


def test_list_pages_with_the_cursor(t2v):
    c = client(t2v)
    ids = [c.videos.create(prompt=f"page {i}", size="832x480", extra_body={"sample_steps": 1}).id for i in range(5)]
    first = c.videos.list(limit=2)
    assert len(first.data) == 2 and first.has_more and first.last_id == first.data[-1].id
    walked = [v.id for v in c.videos.list(limit=2)]  # the SDK follows `after=last_id` to the end
    assert len(walked) == len(set(walked)) and walked[-5:] == ids
    newest = c.videos.list(limit=3, order="desc")
    assert [v.id for v in newest.data] == ids[::-1][:3]
    older = c.videos.list(limit=3, order="desc", after=newest.last_id)
    assert [v.id for v in older.data][:2] == ids[::-1][3:5]


def test_input_reference_upload(ti2v):
    c = client(ti2v)
    png = image_bytes(640, 352, "PNG")
    video = c.videos.create(prompt="the cat starts to run", size="1280x704", seconds="1",
                            input_reference=("cat.png", png, "image/png"), extra_body={"sample_steps": 2})
    done = until_done(c, video.id)
    assert done.status == "completed" and done.model_extra["params"]["image_sha256"]
    call = next(x for x in ti2v.calls_made() if x["input_prompt"] == "the cat starts to run")
    assert call["image"].endswith(".png") and call["frame_num"] == 25  # 1 s at 24 fps


def test_wrong_key_is_an_authentication_error(t2v):
    with pytest.raises(openai.AuthenticationError):
        client(t2v, "not-the-key").videos.list()


@pytest.mark.parametrize("kwargs,error,param", [
    ({"model": "sora-2"}, openai.BadRequestError, "model"),
    ({"size": "1024x1792"}, openai.UnprocessableEntityError, "size"),
    ({"seconds": "99"}, openai.UnprocessableEntityError, "seconds"),
    ({"seconds": "0"}, openai.UnprocessableEntityError, "seconds"),
    ({"input_reference": ("notes.txt", b"just some text", "text/plain")}, openai.UnprocessableEntityError, "image"),
    ({"input_reference": ("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024 + 1), "image/png")},
     openai.UnprocessableEntityError, "image"),
])
def test_bad_input_through_the_sdk(t2v, kwargs, error, param):
    with pytest.raises(error) as raised:
        client(t2v).videos.create(prompt="x", **kwargs)
    assert raised.value.body["param"] == param and raised.value.body["message"], raised.value.body
    assert t2v.api("GET", "/healthz")[0] == 200


def test_oversize_body_is_413(t2v):
    with pytest.raises(openai.APIStatusError) as raised:
        client(t2v).videos.create(prompt="x", input_reference=("huge.png", b"\x00" * (3 * 1024 * 1024), "image/png"))
    assert raised.value.status_code == 413 and "larger than" in raised.value.body["message"]


@pytest.mark.parametrize("body,ctype", [
    (b"--XYZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nfox", "multipart/form-data; boundary=XYZ"),
    (b"garbage without a boundary", "multipart/form-data"),
    (b"--a\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--a--\r\n", "multipart/form-data; boundary=a"),
])
def test_malformed_multipart_is_400_and_the_server_stays_up(t2v, body, ctype):
    status, err, _ = t2v.api("POST", "/v1/videos", raw=body, headers={"Content-Type": ctype})
    assert 400 <= status < 500 and err["error"]["message"], (status, err)
    assert t2v.api("GET", "/healthz")[0] == 200


def test_openapi_schema_and_docs(t2v):
    status, schema, _ = t2v.api("GET", "/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.")
    create = schema["paths"]["/v1/videos"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(create["requestBody"]["content"])
    assert "input_reference" in create["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"/v1/videos/{video_id}/content", "/v1/videos/{video_id}/events"} <= set(schema["paths"])
    status, page, headers = t2v.api("GET", "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"openapi.json" in page


def test_sdk_sees_a_connection_refused_as_a_connection_error(t2v):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0).videos.list()
