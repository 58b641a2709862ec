"""AES-256-GCM envelope encryption at rest: ObjectStore(encryption=...) on disk and on S3 (moto)."""

from __future__ import annotations

import io
import json
import os
import tarfile

import av
import numpy as np
import pytest

from wfm_platform.storage.crypto import MAGIC, Encryption, generate_key, key_id, parse_key
from wfm_platform.storage.errors import DecryptionError, PermanentStorageError
from wfm_platform.storage.objectstore import ObjectStore

pytest_plugins = ["cloud_servers"]  # the moto_s3 fixture

KEY, OTHER = generate_key(), generate_key()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    for var in ("WFM_ENCRYPTION_KEY", "WFM_ENCRYPTION_PREVIOUS_KEYS", "WFM_ENCRYPTION_REQUIRED"):
        monkeypatch.delenv(var, raising=False)


def _enc(key=KEY, **kw) -> Encryption:
    return Encryption(key, **kw)


def test_objects_on_disk_are_ciphertext_and_round_trip(tmp_path):
    store = ObjectStore(tmp_path / "s", encryption=_enc())
    secret = b"face of a person, frame 17 " * 1000
    store.write_bytes("clips/p/c1.bin", secret)
    src = tmp_path / "plain.mp4"
    src.write_bytes(secret[:5000])
    store.put_file(src, "clips/p/c2.mp4")
    with store.staged("clips/p/c3.json") as tmp:
        tmp.write_text(json.dumps({"caption": "a person rides a bike"}))

    for rel in ("clips/p/c1.bin", "clips/p/c2.mp4", "clips/p/c3.json"):
        raw = store.local_path(rel).read_bytes()
        assert raw.startswith(MAGIC) and b"face of a person" not in raw and b"rides a bike" not in raw
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert store.read_bytes("clips/p/c1.bin") == secret
    assert store.size("clips/p/c1.bin") == len(secret)  # the content size, as the catalog records it
    assert store.read_json("clips/p/c3.json") == {"caption": "a person rides a bike"}
    with store.open("clips/p/c1.bin") as f:
        assert f.read(7) == secret[:7] and f.read() == secret[7:]
    with store.local_copy("clips/p/c2.mp4") as p:
        assert p.read_bytes() == secret[:5000] and p.suffix == ".mp4"
    # two writes of the same bytes differ (fresh data key and nonces per object)
    store.write_bytes("clips/p/c1b.bin", secret)
    assert store.local_path("clips/p/c1b.bin").read_bytes() != store.local_path("clips/p/c1.bin").read_bytes()


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 128, 200])
def test_chunk_boundaries(tmp_path, n):
    store = ObjectStore(tmp_path, encryption=_enc(chunk_size=64))
    data = os.urandom(n)
    store.write_bytes("x", data)
    assert store.read_bytes("x") == data and store.size("x") == n
    with store.open("x") as f:
        assert b"".join(iter(lambda: f.read(10), b"")) == data


def _tamper(path, fn):
    path.write_bytes(fn(path.read_bytes()))


@pytest.mark.parametrize("how", ["flip body", "flip header", "truncate at chunk", "drop last byte",
                                 "append", "swap chunks"])
def test_tampering_is_detected(tmp_path, how):
    enc = _enc(chunk_size=64)
    store = ObjectStore(tmp_path, encryption=enc)
    store.write_bytes("k.bin", os.urandom(64 * 3 + 10))
    path = store.local_path("k.bin")
    hlen = len(path.read_bytes()) - (3 * (64 + 16) + 10 + 16)
    ct = 64 + 16

    def flip(b, i):
        return b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]

    _tamper(path, {
        "flip body": lambda b: flip(b, hlen + 5),
        "flip header": lambda b: flip(b, hlen - 20),  # inside the wrapped data key
        "truncate at chunk": lambda b: b[: hlen + 2 * ct],  # whole chunks only: needs the last-chunk flag
        "drop last byte": lambda b: b[:-1],
        "append": lambda b: b + b"x" * 16,
        "swap chunks": lambda b: b[:hlen] + b[hlen + ct: hlen + 2 * ct] + b[hlen: hlen + ct] + b[hlen + 2 * ct:],
    }[how])
    with pytest.raises(DecryptionError) as ei:
        store.read_bytes("k.bin")
    assert str(path.name) in str(ei.value) and ("corrupted" in str(ei.value) or "tampered" in str(ei.value))
    with pytest.raises(DecryptionError), store.local_copy("k.bin"):
        pass


def test_wrong_key_and_rotation(tmp_path):
    ObjectStore(tmp_path, encryption=_enc(OTHER)).write_bytes("old.bin", b"written with the old key")
    with pytest.raises(DecryptionError) as ei:
        ObjectStore(tmp_path, encryption=_enc(KEY)).read_bytes("old.bin")
    msg = str(ei.value)
    assert key_id(parse_key(OTHER)) in msg and "WFM_ENCRYPTION_KEY" in msg and "WFM_ENCRYPTION_PREVIOUS_KEYS" in msg
    # after a rotation: the new key writes, the old one still reads
    rotated = ObjectStore(tmp_path, encryption=Encryption(KEY, [OTHER]))
    assert rotated.read_bytes("old.bin") == b"written with the old key"
    rotated.write_bytes("new.bin", b"new")
    with pytest.raises(DecryptionError):
        ObjectStore(tmp_path, encryption=_enc(OTHER)).read_bytes("new.bin")


def test_plaintext_and_missing_key(tmp_path):
    plain = ObjectStore(tmp_path, encryption=None)
    plain.write_bytes("legacy.json", b'{"written": "before encryption was turned on"}')
    # turning encryption on later keeps old plaintext objects readable...
    assert ObjectStore(tmp_path, encryption=_enc()).read_json("legacy.json")["written"]
    # ...unless the deployment requires every object to be encrypted (fail closed)
    strict = ObjectStore(tmp_path, encryption=_enc(require_encrypted=True))
    with pytest.raises(PermanentStorageError, match="not encrypted"):
        strict.read_bytes("legacy.json")
    # an encrypted object read without a key is an error, never ciphertext handed to a decoder
    ObjectStore(tmp_path, encryption=_enc()).write_bytes("secret.mp4", b"\x00\x00\x00\x18ftypmp42")
    for read in (lambda: plain.read_bytes("secret.mp4"), lambda: plain.open("secret.mp4"),
                 lambda: plain.local_copy("secret.mp4").__enter__()):
        with pytest.raises(DecryptionError, match="is encrypted: set WFM_ENCRYPTION_KEY"):
            read()


def test_key_from_environment_and_bad_keys(tmp_path, monkeypatch):
    assert ObjectStore(tmp_path).encryption is None
    monkeypatch.setenv("WFM_ENCRYPTION_KEY", KEY)
    store = ObjectStore(tmp_path)  # encryption="env" is the default
    assert store.encryption is not None and store.encryption.key_id == key_id(parse_key(KEY))
    assert KEY not in repr(store.encryption)
    store.write_bytes("a", b"abc")
    assert store.local_path("a").read_bytes().startswith(MAGIC)
    for bad in ("", "not base64!", generate_key()[:20], "QUJD"):
        with pytest.raises(ValueError, match="32 random bytes in base64.*generate_key"):
            Encryption(bad)


def test_storage_resource_encrypts_store_not_uploads(tmp_path):
    from resources.storage import EncryptionKeyResource, StorageResource

    res = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=str(tmp_path / "up"), encryption_key=KEY)
    assert res.store().encryption.key_id == key_id(parse_key(KEY))
    assert res.uploads().encryption is None  # uploads are written by users, in plaintext
    assert res.store_for_uri(res.store().uri("clips")).encryption is not None
    assert EncryptionKeyResource(key=KEY, required=True).encryption().require_encrypted
    assert EncryptionKeyResource().encryption() is None


def _write_real_shards(store, samples_dir, tmp_path):
    from wfm_platform.curation.shards import ShardSample, write_shards
    from wfm_platform.video import iter_frames, write_mp4

    clips = []
    for i, (start, end) in enumerate([(0, 30), (30, 76)]):  # two real shots of bikes.mp4
        p = tmp_path / f"c{i}.mp4"
        write_mp4((f for _, f in iter_frames(samples_dir / "bikes.mp4", start=start, end=end)), p, fps=25)
        clips.append(ShardSample(clip_id=f"clip{i}", mp4_path=str(p), metadata={"n": end - start},
                                 caption=f"shot {i}"))
    return write_shards(clips, store, "webdataset_shards/p1"), [open(c.mp4_path, "rb").read() for c in clips]


def _decode(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_encrypted_shards_stream_into_webdataset(tmp_path, samples_dir):
    from wfm_platform.curation.shards import open_dataset, read_manifest, verify_shards

    store = ObjectStore(tmp_path / "store", encryption=_enc())
    manifest, mp4s = _write_real_shards(store, samples_dir, tmp_path)
    shard = store.local_path(store.rel(manifest["shards"][0]["uri"]))
    assert not tarfile.is_tarfile(shard) and shard.read_bytes().startswith(MAGIC)
    assert read_manifest(store, "webdataset_shards/p1") == manifest  # the manifest itself is encrypted too
    assert store.local_path("webdataset_shards/p1/manifest.json").read_bytes().startswith(MAGIC)
    assert verify_shards(store, manifest) == []  # sizes and sha256 are of the plaintext tar

    urls = [s["uri"] for s in manifest["shards"]]
    samples = list(open_dataset(store.webdataset_urls(urls)))
    assert [s["__key__"] for s in samples] == ["clip0", "clip1"]
    assert [s["mp4"] for s in samples] == mp4s  # byte-identical clips out of the encrypted shard
    assert [_decode(s["mp4"]) for s in samples] == [_decode(m) for m in mp4s] and _decode(mp4s[1]) > 40
    assert samples[1]["txt"] == b"shot 1"
    # without the key, webdataset gets a clear error rather than garbage
    with pytest.raises(DecryptionError):
        list(open_dataset(ObjectStore(tmp_path / "store", encryption=_enc(OTHER)).webdataset_urls(urls)))


def test_tokenizer_training_streams_encrypted_shards(tmp_path, samples_dir):
    """The issue's promise: encrypted shards still stream into training (the tokenizer's ClipStream
    and a real optimisation step), not only into a bare webdataset loop."""
    from wfm_platform.tokenizer.data import ClipStream, ClipStreamConfig
    from wfm_platform.tokenizer.train import load_train_config, train

    store = ObjectStore(tmp_path / "store", encryption=_enc())
    manifest, _ = _write_real_shards(store, samples_dir, tmp_path)
    items = list(ClipStream(manifest, ClipStreamConfig(num_frames=9, size=(32, 32)), store=store, epochs=1))
    assert [i["key"] for i in items] == ["clip0", "clip1"]
    assert all(i["video"].shape == (3, 9, 32, 32) and float(i["video"].std()) > 0.05 for i in items)
    cfg = load_train_config(None, tokenizer="cv4x8x8", preset="tiny", crop=(32, 32), batch_size=1, steps=2,
                            checkpoint_every=2, threads=1)
    res = train(cfg, manifest, tmp_path / "run", store=store)
    assert res.step == 2 and all(np.isfinite(res.losses))


def test_encrypted_shards_on_s3(moto_s3, tmp_path, samples_dir):
    from wfm_platform.curation.shards import open_dataset

    store = ObjectStore(moto_s3.make_bucket(), moto_s3.storage_options, encryption=_enc())
    manifest, mp4s = _write_real_shards(store, samples_dir, tmp_path)
    raw = moto_s3.filesystem().cat_file(store._path(store.rel(manifest["shards"][0]["uri"])))
    assert raw.startswith(MAGIC) and b"clip0.mp4" not in raw  # not even tar member names leak
    samples = list(open_dataset(store.webdataset_urls([s["uri"] for s in manifest["shards"]])))
    assert [s["mp4"] for s in samples] == mp4s and _decode(samples[0]["mp4"]) > 25
