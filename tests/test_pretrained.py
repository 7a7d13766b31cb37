"""`pretrained=`: each lookup path (explicit path, $FACENET_HOME, package checkpoints/, torch hub
cache, download over loopback HTTP with good / bad / unknown sha256), and the missing-file message."""
import copy
import hashlib
import http.server
import io
import json
import threading

import pytest
import torch

import facenet_tf2pt.models.hub.pretrained as pretrained
import facenet_tf2pt.models.hub.registry as registry
from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1
from facenet_tf2pt.models.hub.pretrained import ChecksumError, Registry, resolve_inception_weights, resolve_mtcnn_weights
from tests.helpers import REPO

STEM = "fixture-512d-seed0-ci-fixture"
REGISTRY = REPO / "checkpoints" / "registry.json"


def _bytes(state_dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_weights():
    """The tensors resolve_inception_weights reads sizes from (512-d, 17 classes): a few MB."""
    return _bytes({"last_linear.weight": torch.randn(512, 1792), "logits.weight": torch.randn(17, 512)})


@pytest.fixture(scope="module")
def full_weights():
    torch.manual_seed(0)
    return _bytes(InceptionResNetV1(num_classes=17).state_dict())


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Every lookup location under tmp_path, all empty: $FACENET_HOME unset, the package's
    checkpoints/ and the torch hub cache redirected."""
    pkg, torch_home = tmp_path / "pkg", tmp_path / "torch"
    pkg.mkdir()
    (pkg / "registry.json").write_bytes(REGISTRY.read_bytes())
    monkeypatch.delenv("FACENET_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(pretrained, "checkpoints_dir", lambda: pkg)
    return {"home": tmp_path / "home", "pkg": pkg, "hub": torch_home / "hub" / "checkpoints", "tmp": tmp_path}


def _registry(mirrors=(), sandberg=False) -> Registry:
    """The real registry's CI-fixture entry (or the vggface2 entry), file not recorded, with the given mirrors."""
    raw = json.loads(REGISTRY.read_text())
    tag = "vggface2" if sandberg else "ci-fixture"
    entry = copy.deepcopy(next(d for d in raw["models"] if d["tag"] == tag))
    entry["weights"][0].update(file=None, sha256=None, size=None, reason="test")
    entry["mirrors"] = [dict(dict(file=f"{STEM}.pt", sha256=None, size=None, provider="test",
                                  reason="unknown in this test"), **m) for m in mirrors]
    return Registry.from_dict({"format": raw["format"], "models": [entry]})


@pytest.fixture
def server():
    """A loopback HTTP server serving `files` (path -> bytes); counts requests per path."""
    files, hits = {}, {}

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10

        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield type("S", (), {"files": files, "hits": hits,
                             "url": f"http://127.0.0.1:{httpd.server_address[1]}"})
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- 1. explicit path -------------------------------------------------------------------------

def test_explicit_path_wins_and_sizes_come_from_the_file(places, small_weights, full_weights):
    path = places["tmp"] / "anything.pt"
    path.write_bytes(full_weights)
    (places["pkg"] / f"{STEM}.pt").write_bytes(small_weights)   # would be found by name: not used
    entry, sd = resolve_inception_weights(str(path))
    assert entry.name == "anything.pt" and (entry.embedding_size, entry.num_classes) == (512, 17)
    model = InceptionResNetV1(pretrained=path)
    assert model.num_classes == 17
    assert torch.equal(model.state_dict()["conv2d_1a.conv.weight"], sd["conv2d_1a.conv.weight"])
    with pytest.raises(ValueError, match="num_classes=17; got num_classes=5"):
        InceptionResNetV1(pretrained=path, num_classes=5)


def test_explicit_path_with_hash_prefix_is_checked(places, small_weights):
    sha8 = hashlib.sha256(small_weights).hexdigest()[:8]
    good = places["tmp"] / f"{STEM}-{sha8}.pt"
    good.write_bytes(small_weights)
    entry, _ = resolve_inception_weights(good)
    assert entry.id == "inception_resnet_v1.ci-fixture"      # a registry file name: the entry itself
    bad = places["tmp"] / f"{STEM}-00000000.pt"
    bad.write_bytes(small_weights)
    with pytest.raises(ChecksumError, match="does not start with the 00000000"):
        resolve_inception_weights(bad)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        resolve_inception_weights(places["tmp"] / "missing.pt")
    other = places["tmp"] / "model-20180402.pt"          # 8 hex digits, but not a release name
    other.write_bytes(small_weights)
    assert resolve_inception_weights(other)[0].name == "model-20180402.pt"


# --- 2-4. $FACENET_HOME, the package's checkpoints/, the torch hub cache ------------------------

def test_lookup_order_env_then_package_then_hub(places, small_weights, monkeypatch):
    reg = _registry()
    sha8 = hashlib.sha256(small_weights).hexdigest()[:8]
    for folder in ("hub", "pkg", "home"):
        places[folder].mkdir(parents=True, exist_ok=True)
    (places["hub"] / f"{STEM}.pt").write_bytes(small_weights)
    (places["pkg"] / f"{STEM}-{sha8}.pt").write_bytes(small_weights)
    (places["home"] / f"{STEM}.safetensors").write_bytes(b"")  # placeholder; replaced below
    from safetensors.torch import save_file

    save_file(torch.load(io.BytesIO(small_weights), weights_only=True), places["home"] / f"{STEM}.safetensors")

    monkeypatch.setenv("FACENET_HOME", str(places["home"]))
    assert pretrained.find_inception_file(reg.get("ci-fixture")).parent == places["home"]
    monkeypatch.delenv("FACENET_HOME")
    assert pretrained.find_inception_file(reg.get("ci-fixture")).name == f"{STEM}-{sha8}.pt"
    (places["pkg"] / f"{STEM}-{sha8}.pt").unlink()
    found = pretrained.find_inception_file(reg.get("ci-fixture"), download_missing=False)
    assert found == places["hub"] / f"{STEM}.pt"
    entry, sd = resolve_inception_weights("ci-fixture", registry=reg, download=False)
    assert entry.num_classes == 17 and sd["logits.weight"].shape == (17, 512)


def test_pretrained_name_builds_the_model_from_facenet_home(places, full_weights, monkeypatch):
    places["home"].mkdir()
    (places["home"] / f"{STEM}.pt").write_bytes(full_weights)
    monkeypatch.setenv("FACENET_HOME", str(places["home"]))
    monkeypatch.setattr(registry, "_DEFAULT", None)
    model = InceptionResNetV1(pretrained="ci-fixture")         # the real registry
    assert (model.embedding_size, model.num_classes) == (512, 17)
    expected = torch.load(io.BytesIO(full_weights), weights_only=True)
    assert torch.equal(model.state_dict()["last_bn.running_var"], expected["last_bn.running_var"])
    assert not model.training


# --- 5. download ------------------------------------------------------------------------------

def test_download_good_sha256_lands_atomically_in_the_cache(places, server, small_weights, capsys):
    server.files["/w.pt"] = small_weights
    digest = hashlib.sha256(small_weights).hexdigest()
    reg = _registry([{"url": server.url + "/w.pt", "sha256": digest, "size": len(small_weights)}])
    entry, sd = resolve_inception_weights("ci-fixture", registry=reg, progress=False)
    assert sd["logits.weight"].shape == (17, 512)
    assert sorted(p.name for p in places["hub"].iterdir()) == [f"{STEM}.pt"]    # no temp file left
    assert "trust on first use" not in capsys.readouterr().err
    resolve_inception_weights("ci-fixture", registry=reg, progress=False)      # from the cache now
    assert server.hits["/w.pt"] == 1


def test_download_bad_sha256_is_refused_and_nothing_kept(places, server, small_weights):
    server.files["/w.pt"] = small_weights
    reg = _registry([{"url": server.url + "/w.pt", "sha256": "0" * 64}])
    with pytest.raises(ChecksumError, match="does not match the registry's 0000"):
        resolve_inception_weights("ci-fixture", registry=reg, progress=False)
    assert not places["hub"].exists() or list(places["hub"].iterdir()) == []


def test_download_unknown_sha256_trusts_on_first_use_loudly_then_enforces(places, server, small_weights,
                                                                          capsys):
    server.files["/w.pt"] = small_weights
    digest = hashlib.sha256(small_weights).hexdigest()
    reg = _registry([{"url": server.url + "/w.pt"}])
    resolve_inception_weights("ci-fixture", registry=reg, progress=False)
    err = capsys.readouterr().err
    assert "trust on first use" in err and digest in err
    record = places["hub"] / f"{STEM}.pt.sha256"
    assert record.read_text() == f"{digest}  {STEM}.pt\n"
    resolve_inception_weights("ci-fixture", registry=reg, progress=False)     # checked, silent
    assert "trust on first use" not in capsys.readouterr().err and server.hits["/w.pt"] == 1
    # the cached file changes behind our back: the record catches it
    tampered = torch.load(io.BytesIO(small_weights), weights_only=True)
    tampered["logits.weight"][0, 0] += 1
    (places["hub"] / f"{STEM}.pt").write_bytes(_bytes(tampered))
    with pytest.raises(ChecksumError, match="changed since it was first trusted"):
        resolve_inception_weights("ci-fixture", registry=reg, progress=False)


def test_file_in_the_hub_cache_without_record_is_trusted_on_first_use(places, small_weights, capsys):
    """facenet-pytorch caches its downloads in the same folder under the mirror's name."""
    places["hub"].mkdir(parents=True)
    (places["hub"] / f"{STEM}.pt").write_bytes(small_weights)
    reg = _registry([{"url": "http://127.0.0.1:9/never-fetched.pt"}])
    resolve_inception_weights("ci-fixture", registry=reg, progress=False)
    assert "trust on first use" in capsys.readouterr().err
    assert (places["hub"] / f"{STEM}.pt.sha256").read_text().startswith(hashlib.sha256(small_weights).hexdigest())


def test_download_through_file_url_and_failed_mirror_is_skipped(places, server, small_weights):
    src = places["tmp"] / "published.pt"
    src.write_bytes(small_weights)
    digest = hashlib.sha256(small_weights).hexdigest()
    reg = _registry([{"url": server.url + "/gone.pt", "sha256": digest},        # 404: next one
                     {"url": src.as_uri(), "sha256": digest}])
    entry, _ = resolve_inception_weights("ci-fixture", registry=reg, progress=False)
    assert (places["hub"] / f"{STEM}.pt").read_bytes() == small_weights


# --- 6. missing ------------------------------------------------------------------------------

def test_missing_names_the_file_and_the_convert_command(places, monkeypatch):
    reg = _registry(sandberg=True)
    with pytest.raises(FileNotFoundError) as e:
        resolve_inception_weights("vggface2", registry=reg)
    msg = str(e.value)
    assert "20180402-114759-vggface2.pt" in msg and "20180402-114759-vggface2-<sha8>.pt" in msg
    assert "$FACENET_HOME: (not set)" in msg and str(places["hub"]) in msg
    assert "no download URL" in msg
    assert "facenet-convert convert checkpoints/tf/20180402-114759 -o " in msg
    monkeypatch.setenv("FACENET_HOME", str(places["home"]))
    with pytest.raises(FileNotFoundError) as e:
        resolve_inception_weights("vggface2", registry=reg)
    assert f"-o {places['home'] / '20180402-114759-vggface2.pt'}" in str(e.value)


def test_missing_with_download_off_lists_the_urls_not_tried(places):
    monkey_registry = Registry.from_dict(json.loads(REGISTRY.read_text()))
    with pytest.raises(FileNotFoundError) as e:
        resolve_inception_weights("vggface2", registry=monkey_registry, download=False)
    assert "v2.2.9/20180402-114759-vggface2.pt: not tried" in str(e.value)


def test_unknown_name():
    with pytest.raises(ValueError, match="not a registered model"):
        InceptionResNetV1(pretrained="vggface3")


# --- MTCNN ------------------------------------------------------------------------------------

def test_mtcnn_weights_default_to_the_committed_package_files():
    assert resolve_mtcnn_weights() == REPO / "checkpoints" / "mtcnn"
    sds = pretrained.load_mtcnn_state_dicts()
    assert set(sds) == {"pnet", "rnet", "onet"} and "conv4_1.weight" in sds["pnet"]


def test_mtcnn_lookup_order_and_missing(places, monkeypatch):
    committed = REPO / "checkpoints" / "mtcnn"
    with pytest.raises(FileNotFoundError) as e:
        resolve_mtcnn_weights()
    assert "facenet-convert mtcnn checkpoints/tf/mtcnn -o" in str(e.value)
    home = places["home"] / "mtcnn"
    home.mkdir(parents=True)
    for net in ("pnet", "rnet", "onet"):
        (home / f"{net}.pt").write_bytes((committed / f"{net}.pt").read_bytes())
    monkeypatch.setenv("FACENET_HOME", str(places["home"]))
    assert resolve_mtcnn_weights() == home
    assert resolve_mtcnn_weights(committed) == committed                   # explicit path first
    with pytest.raises(FileNotFoundError, match="no pnet, rnet and onet"):
        resolve_mtcnn_weights(places["tmp"])
