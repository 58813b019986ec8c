"""Volumes through the API: upload (NIfTI, .nii.gz, DICOM series as a zip, one DICOM file), slices by plane
and index with their edge labels, volume slices in place of images in ground/chat/segment, refusals."""

from __future__ import annotations

import base64
import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medground.io.dicom import load_dicom_series
from medground.serve.app import ServeSettings, create_app

from .conftest import HC18

MEDVOL = Path("/work/shared/data/medvol")
DICOM = Path("/work/shared/data/dicom")
CT_NII = MEDVOL / "openkbp_headneck_ct" / "images" / "openkbp_pt_22_ct.nii.gz"
MR_NII = MEDVOL / "brats2015_deepmedic_mr" / "images" / "brats_2013_pat0006_1_Flair_subtrMeanDivStd.nii.gz"
CT_SERIES = DICOM / "rtutils_phantom_ct_rtstruct" / "ct"
CT_SMALL = DICOM / "pydicom_test_files" / "CT_small.dcm"
AXIAL = {"left": "R", "right": "L", "top": "A", "bottom": "P"}
CORONAL = {"left": "R", "right": "L", "top": "S", "bottom": "I"}
SAGITTAL = {"left": "A", "right": "P", "top": "S", "bottom": "I"}


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return TestClient(create_app(*models))


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, gz: bool = False) -> bytes:
    raw = nib.Nifti1Image(array, affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def _upload(client: TestClient, data: bytes, **params: str) -> dict:
    reply = client.post("/v1/volumes", content=data, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _slice(client: TestClient, volume: str, plane: str, index: int, window: str | None = None) -> np.ndarray:
    reply = client.get(
        f"/v1/volumes/{volume}/{plane}/{index}.png", params={"window": window} if window else {}
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(reply.content)))


# A file stored P, S, R (voxel i -> posterior, j -> superior, k -> right), 6 x 8 x 10 voxels, centred on
# the world origin: no voxel sits on a midplane, so each patient half is exactly half of each axis.
PSR = np.array([[0, 0, 2.0, -9.0], [-1.5, 0, 0, 3.75], [0, 1.0, 0, -3.5], [0, 0, 0, 1]])


def _marked(half: str) -> bytes:
    """-1000 HU everywhere, +1000 HU in the patient's left, anterior or superior half (world RAS mm)."""
    i, j, k = np.meshgrid(np.arange(6), np.arange(8), np.arange(10), indexing="ij")
    x, y, z = (PSR[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + PSR[:3, 3:]).reshape(3, 6, 8, 10)
    marked = {"left": x < 0, "anterior": y > 0, "superior": z > 0}[half]
    return _nifti_bytes(np.where(marked, 1000, -1000).astype(np.int16), PSR)


@pytest.mark.parametrize(
    ("half", "expected"),
    [
        # plane -> where the marked half shows: "right"/"left"/"top" half of the image, or by slice index
        ("left", {"axial": "right", "coronal": "right", "sagittal": "first"}),
        ("anterior", {"axial": "top", "coronal": "last", "sagittal": "left"}),
        ("superior", {"axial": "last", "coronal": "top", "sagittal": "top"}),
    ],
)
def test_slices_are_radiological_and_their_edges_say_so(
    client: TestClient, half: str, expected: dict
) -> None:
    info = _upload(client, _marked(half), modality="ct")
    assert info["shape"] == [10, 6, 8]  # canonical (X, Y, Z): R from k (10), A from i (6), S from j (8)
    assert info["spacing"] == [2.0, 1.5, 1.0]
    assert info["window"] == "soft-tissue"  # -1000 HU -> 0, +1000 HU -> 255
    planes = info["planes"]
    assert [planes[p]["count"] for p in ("axial", "coronal", "sagittal")] == [8, 6, 10]
    assert [(planes[p]["height"], planes[p]["width"]) for p in ("axial", "coronal", "sagittal")] == [
        (6, 10),
        (8, 10),
        (8, 6),
    ]
    assert [planes[p]["edges"] for p in ("axial", "coronal", "sagittal")] == [AXIAL, CORONAL, SAGITTAL]
    for plane, where in expected.items():
        count = planes[plane]["count"]
        first, middle, last = (_slice(client, info["id"], plane, n) for n in (0, count // 2, count - 1))
        h, w = middle.shape
        if where == "right":
            assert (middle[:, : w // 2] == 0).all() and (middle[:, w // 2 :] == 255).all(), plane
        elif where == "left":
            assert (middle[:, : w // 2] == 255).all() and (middle[:, w // 2 :] == 0).all(), plane
        elif where == "top":
            assert (middle[: h // 2] == 255).all() and (middle[h // 2 :] == 0).all(), plane
        else:  # the marked half is the first (or the last) slices along the plane's axis
            marked, unmarked = (first, last) if where == "first" else (last, first)
            assert (marked == 255).all() and (unmarked == 0).all(), plane


def test_a_real_ct_volume_gz_slices_as_nibabel_and_the_soft_tissue_window_give(client: TestClient) -> None:
    info = _upload(client, CT_NII.read_bytes(), modality="ct", name=CT_NII.name)
    hu = np.asarray(nib.as_closest_canonical(nib.load(CT_NII)).get_fdata(), dtype=np.float64)
    assert info["shape"] == list(hu.shape)
    display = np.floor(np.clip((hu + 160.0) * 255.0 / 400.0, 0, 255) + 0.5).astype(
        np.uint8
    )  # level 40, width 400
    z, y, x = hu.shape[2] // 2, hu.shape[1] // 3, hu.shape[0] // 4
    assert np.array_equal(_slice(client, info["id"], "axial", z), display[:, :, z].T[::-1, ::-1])
    assert np.array_equal(_slice(client, info["id"], "coronal", y), display[:, y, :].T[::-1, ::-1])
    assert np.array_equal(_slice(client, info["id"], "sagittal", x), display[x, :, :].T[::-1, ::-1])
    lung = np.floor(np.clip((hu + 1350.0) * 255.0 / 1500.0, 0, 255) + 0.5).astype(
        np.uint8
    )  # level -600, width 1500
    assert np.array_equal(_slice(client, info["id"], "axial", z, "lung"), lung[:, :, z].T[::-1, ::-1])


def test_an_mr_volume_is_shown_between_its_nonzero_percentiles(client: TestClient) -> None:
    info = _upload(client, MR_NII.read_bytes())  # no modality: not DICOM CT, so the percentile display
    assert info["window"] == "percentiles"
    values = np.asarray(nib.as_closest_canonical(nib.load(MR_NII)).get_fdata(), dtype=np.float64)
    lo, hi = np.percentile(values[values != 0], [0.5, 99.5])
    display = np.floor(np.clip((values - lo) * 255.0 / (hi - lo), 0, 255) + 0.5).astype(np.uint8)
    z = 77
    assert np.array_equal(_slice(client, info["id"], "axial", z), display[:, :, z].T[::-1, ::-1])


def test_a_dicom_series_zip_reads_as_the_folder_reader_does_and_ct_gets_the_soft_tissue_window(
    client: TestClient,
) -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for path in sorted(CT_SERIES.iterdir()):
            archive.write(path, f"series/{path.name}")
    info = _upload(client, packed.getvalue(), name="series.zip")
    from_disk = load_dicom_series(CT_SERIES)
    assert info["shape"] == list(from_disk.shape)
    assert info["window"] == "soft-tissue"  # the files say Modality CT
    assert info["planes"]["axial"]["count"] == 5
    hu = from_disk.array.astype(np.float64)
    display = np.floor(np.clip((hu + 160.0) * 255.0 / 400.0, 0, 255) + 0.5).astype(np.uint8)
    assert np.array_equal(_slice(client, info["id"], "axial", 2), display[:, :, 2].T[::-1, ::-1])


def test_one_dicom_file_is_a_volume_of_one_axial_slice(client: TestClient) -> None:
    info = _upload(client, CT_SMALL.read_bytes(), name="CT_small.dcm")
    assert info["planes"]["axial"]["count"] == 1
    assert (info["planes"]["axial"]["height"], info["planes"]["axial"]["width"]) == (128, 128)
    assert set(info) == {
        "id",
        "shape",
        "spacing",
        "window",
        "windows",
        "planes",
    }  # no DICOM tag value comes back


def test_ground_chat_and_segment_take_a_volume_slice_and_say_which_slice_their_boxes_refer_to(
    client: TestClient, models
) -> None:
    grounder, segmenter = models
    info = _upload(client, CT_NII.read_bytes(), modality="ct")
    ref = {"volume": info["id"], "plane": "coronal", "index": 60}
    pixels = _slice(client, info["id"], "coronal", 60)
    expected_slice = {**ref, "window": "soft-tissue", "width": 128, "height": 128, "edges": CORONAL}

    reply = client.post("/v1/ground", json={"volume_slice": ref, "question": "Where is the spinal cord?"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    direct = grounder.ask(Image.fromarray(pixels).convert("RGB"), "Where is the spinal cord?")
    assert body["answer"] == direct.text
    assert body["boxes"] == [{"label": g.label, "box": g.box.as_list()} for g in direct.boxes]
    assert (body["width"], body["height"]) == (128, 128)
    assert body["slice"] == expected_slice

    chat = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "volume_slice", "volume_slice": ref},
                        {"type": "text", "text": "Where is the spinal cord?"},
                    ],
                }
            ]
        },
    )
    assert chat.status_code == 200, chat.text
    extension = chat.json()["choices"][0]["message"]["medground"]
    assert extension["slice"] == expected_slice
    assert chat.json()["choices"][0]["message"]["content"] == direct.text

    support = np.asarray(Image.open(HC18 / "images" / "000_HC.png").convert("L").resize((128, 128)))
    mask = (
        np.asarray(Image.open(HC18 / "masks" / "000_HC_mask.png").convert("L").resize((128, 128))) > 0
    ) * 255
    encode = lambda a: base64.b64encode(_png(a)).decode()  # noqa: E731
    seg = client.post(
        "/v1/segment",
        json={
            "query_slice": ref,
            "support": [{"image": encode(support), "mask": encode(mask.astype(np.uint8))}],
        },
    )
    assert seg.status_code == 200, seg.text
    assert seg.json()["slice"] == expected_slice
    assert (seg.json()["height"], seg.json()["width"]) == (128, 128)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"question": "q"}, 400, "give exactly one of image"),
        (
            {"question": "q", "image": "x", "volume_slice": {"volume": "v", "plane": "axial", "index": 0}},
            400,
            "exactly one",
        ),
        (
            {"question": "q", "volume_slice": {"volume": "nope", "plane": "axial", "index": 0}},
            404,
            "is not held",
        ),
        (
            {"question": "q", "volume_slice": {"volume": "v", "plane": "oblique", "index": 0}},
            400,
            "volume_slice.plane",
        ),
        (
            {"question": "q", "volume_slice": {"volume": "v", "plane": "axial", "index": -1}},
            400,
            "volume_slice.index",
        ),
    ],
)
def test_bad_slice_references_are_refused(client: TestClient, body: dict, status: int, words: str) -> None:
    reply = client.post("/v1/ground", json=body)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]["message"]


def test_out_of_range_slices_unknown_windows_planes_and_ids_are_refused(client: TestClient) -> None:
    info = _upload(client, _marked("left"))
    for url, words in [
        (f"/v1/volumes/{info['id']}/axial/8.png", "axial slice 8 is outside 0..7"),
        (f"/v1/volumes/{info['id']}/axial/0.png?window=lugn", "unknown window 'lugn'"),
        (f"/v1/volumes/{info['id']}/oblique/0.png", "unknown plane 'oblique'"),
    ]:
        reply = client.get(url)
        assert reply.status_code == 400 and words in reply.json()["error"]["message"], reply.text
    for url in ("/v1/volumes/" + "x" * 70 + "/axial/0.png", "/v1/volumes/" + "x" * 70):
        assert client.get(url).status_code == 404


def _zero_sform() -> bytes:
    """A NIfTI file whose sform (the affine nibabel uses) is all zeros: no voxel-to-world mapping."""
    data = bytearray(_nifti_bytes(np.zeros((4, 4, 4), np.int16), np.eye(4)))
    data[280:328] = bytes(48)  # srow_x, srow_y, srow_z: 12 float32
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty body"),
        (b"plain text, not a volume" * 30, 400, "not a NIfTI file"),
        (gzip.compress(b"\x00" * 600), 400, "not a NIfTI file"),
        (b"PK\x03\x04 broken zip", 400, "not a readable zip"),
        (_nifti_bytes(np.zeros((4, 4, 4), np.int16), np.eye(4))[:400], 400, "upload"),
        (_zero_sform(), 400, "does not map voxels to 3D"),
        (_nifti_bytes(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), 400, "expected 3D"),
        (
            _nifti_bytes(np.zeros((4, 4, 4), np.int16), np.eye(4))[:40] + b"\x03\x00\xfb\xff" + bytes(312),
            400,
            "corrupt NIfTI header",
        ),
        (
            (DICOM / "rtutils_phantom_ct_rtstruct" / "rtstruct" / "rt.dcm").read_bytes(),
            400,
            "no DICOM image files",
        ),
        ((DICOM / "pydicom_test_files" / "SC_rgb_rle.dcm").read_bytes(), 400, "expected one grey"),
    ],
)
def test_unreadable_uploads_get_a_400_naming_the_reason(
    client: TestClient, data: bytes, status: int, words: str
) -> None:
    reply = client.post("/v1/volumes", content=data)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]["message"]


def test_a_gzip_bomb_is_stopped_at_the_header_and_huge_headers_before_inflating(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(max_voxels=1000, max_volume_bytes=200_000)))
    huge = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    huge.header.set_data_shape((4096, 4096, 4096))
    claim = gzip.compress(huge.header.binaryblock + b"\x00" * 4 + b"\x00" * 8)
    reply = client.post("/v1/volumes", content=claim)
    assert reply.status_code == 413 and "68719476736 voxels is over the 1000-voxel limit" in reply.text
    # a 10x10x10 header followed by 100 MB of zeros: only the 1000 voxels the header declares are inflated
    small = _nifti_bytes(np.zeros((10, 10, 10), np.uint8), np.eye(4))
    bomb = gzip.compress(small + b"\x00" * 100_000_000, compresslevel=9)
    assert len(bomb) < 200_000
    reply = client.post("/v1/volumes", content=bomb)
    assert reply.status_code == 200, reply.text
    assert reply.json()["shape"] == [10, 10, 10]
    too_big = client.post("/v1/volumes", content=b"\x00" * 250_000)
    assert too_big.status_code == 413 and "200000-byte limit" in too_big.text


def test_the_store_keeps_the_most_recently_used_volumes(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(max_volumes=2)))
    first, second = (_upload(client, _marked("left"))["id"] for _ in range(2))
    assert client.get(f"/v1/volumes/{first}").status_code == 200  # first is now the most recently used
    _upload(client, _marked("left"))
    assert client.get(f"/v1/volumes/{second}").status_code == 404
    assert client.get(f"/v1/volumes/{first}").status_code == 200
    assert len(first) >= 20 and first != second


def test_with_a_token_the_page_loads_without_it_and_volumes_need_it(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(token="s3cret")))
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (
        'src="/static/page.js"' in page.text and "http" not in page.text.split("<body>")[1]
    )  # nothing external
    assert client.get("/static/page.js").status_code == 200
    assert client.post("/v1/volumes", content=_marked("left")).status_code == 401
    reply = client.post("/v1/volumes", content=_marked("left"), headers={"Authorization": "Bearer s3cret"})
    assert reply.status_code == 200
    assert client.get(f"/v1/volumes/{reply.json()['id']}/axial/0.png").status_code == 401


def test_segment_takes_a_box_drawn_on_a_slice_as_the_box_prompt(client: TestClient, models) -> None:
    _, segmenter = models
    info = _upload(client, CT_NII.read_bytes(), modality="ct")
    ref, box = {"volume": info["id"], "plane": "axial", "index": 64}, [30, 40, 90, 100]
    reply = client.post("/v1/segment", json={"query_slice": ref, "box": box})
    assert reply.status_code == 200, reply.text
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply.json()["mask_png"])))) > 0
    direct = segmenter.segment(_slice(client, info["id"], "axial", 64), box=box) >= 0.5
    assert np.array_equal(mask, direct) and mask.any()
    assert not mask[:, :30].any() and not mask[:40].any()  # nothing outside the box
    outside = client.post("/v1/segment", json={"query_slice": ref, "box": [0, 0, 200, 10]})
    assert outside.status_code == 400 and "outside the 128x128" in outside.text


def test_a_zip_of_two_dicom_series_is_refused_without_echoing_their_tags(client: TestClient) -> None:
    study = DICOM / "tcia_brain_tumor_progression_mr" / "PGBM-001_1992-04-02"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for folder in ("T1post", "MaskTumor"):
            for path in sorted((study / folder).iterdir()):
                archive.write(path, f"{folder}/{path.name}")
    reply = client.post("/v1/volumes", content=packed.getvalue(), params={"name": "study.zip"})
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert message == "study.zip: holds 2 image series; upload one series at a time"


def test_dicom_voxels_are_counted_from_the_headers_before_decoding(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(max_voxels=128 * 128 - 1)))
    reply = client.post("/v1/volumes", content=CT_SMALL.read_bytes(), params={"name": "CT_small.dcm"})
    assert reply.status_code == 413 and "16384 voxels is over the 16383-voxel limit" in reply.text
