"""Regression tests for issue 16 items 8-10: out-of-range integers, huge thread counts and
allocation failures in the native ops end in a clear Python exception, never in pybind's
"incompatible function arguments", a segfault or an abort."""

import subprocess
import sys

import numpy as np
import pytest
from reference import occlude_batch_ref, splat_add_ref

from facesal_fast import ops

IMAGE = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)


@pytest.mark.parametrize("patch", [10**9, 2**31, 10**20])
def test_huge_patch_is_a_value_error_naming_patch(patch):
    with pytest.raises(ValueError, match=r"patch must be at most 536870912"):
        ops.occlude_batch(IMAGE, [[3, 3]], patch)
    with pytest.raises(ValueError, match=r"patch must be at most 536870912"):
        ops.splat_add(np.ones((1, 1), np.float32), [[3, 3]], patch, (4, 4))


def test_largest_patch_covers_the_image_like_the_reference():
    centers = np.array([[3, 3], [-1e6, 5]], np.float32)
    got = ops.occlude_batch(IMAGE, centers, ops.MAX_SIZE, scale=1.0)
    np.testing.assert_allclose(got, occlude_batch_ref(IMAGE, centers, ops.MAX_SIZE, 0.0, 0.0, 1.0, scale=1.0))


@pytest.mark.parametrize(
    "shape,match",
    [
        ((10**12, 4), "shape's H must be at most"),
        ((4, 2**31), "shape's W must be at most"),
        ((4.5, 4), r"shape must be \(H, W\) integers"),
        ((True, 4), "integers"),
    ],
)
def test_out_of_range_canvas_is_a_value_error(shape, match):
    with pytest.raises(ValueError, match=match):
        ops.splat_add(np.ones((1, 1), np.float32), [[1, 1]], 3, shape)


def test_huge_thread_count_is_refused_naming_the_bound():
    with pytest.raises(ValueError, match=rf"threads must be at most {ops.MAX_THREADS} \(4 x the"):
        ops.occlude_batch(IMAGE, [[3, 3]], 3, threads=100000)
    with pytest.raises(ValueError, match="threads must be at most"):
        ops.occlude_batch(IMAGE, [[3, 3]], 3, threads=ops.MAX_THREADS + 1)


def test_most_threads_allowed_gives_the_reference():
    centers = np.array([[1, 1], [4, 2]], np.float32)  # fewer copies than threads: the team shrinks to K
    got = ops.occlude_batch(IMAGE, centers, 3, threads=ops.MAX_THREADS, scale=1.0)
    np.testing.assert_allclose(got, occlude_batch_ref(IMAGE, centers, 3, 0.0, 0.0, 1.0, scale=1.0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(std=1e-300), "beyond float32's range"),
        (dict(scale=1e300), "beyond float32's range"),
        (dict(std=1e-3, scale=1.0, dtype="float16"), "beyond float16's range"),
        (dict(scale="x"), "scale must be"),
        (dict(fill="blur", blur_sigma=float("inf")), "blur_sigma must be"),
        (dict(mean="a"), "mean: expected"),
    ],
)
def test_normalisation_out_of_range_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.occlude_batch(IMAGE, [[3, 3]], 3, **kwargs)


def test_sums_that_overflow_float32_are_refused_but_float64_buffers_work():
    values = np.full((1, 3), 3e38, np.float32)
    points = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="pass float64 out buffers"):
        ops.splat_add(values, points, 3, (4, 4))
    sums, counts = ops.splat_add(values, points, 3, (4, 4), out=(np.zeros((1, 4, 4)), np.zeros((4, 4))))
    np.testing.assert_allclose(sums, splat_add_ref(values, points, 3, (4, 4))[0])


SPLAT_UNDER_LIMITS = """
import resource, numpy as np
from facesal_fast import ops
ops.splat_add(np.ones((3, 5), np.float32), np.ones((5, 2), np.float32), 3, (8, 8))  # start the 2-thread team
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
values, points = np.ones((1, 2), np.float32), np.array([[10, 10], [5990, 5990]], np.float32)
for extra_mib in (100, 288 + 150, 2 * 288 + 150):
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_mib * 2**20, resource.RLIM_INFINITY))
    try:
        sums, counts = ops.splat_add(values, points, 5, (6000, 6000))
        print(extra_mib, "ok", sums.sum(), counts.sum(), sums[0, 8, 8], counts[5992, 5992])
        del sums, counts
    except MemoryError as err:
        print(extra_mib, "MemoryError", err)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
"""


@pytest.fixture(scope="module")
def splat_under_limits() -> dict[int, str]:
    """A 6000 x 6000 splat (outputs 2 x 144 MB, float64 workspace 288 MB per difference image)
    in a fresh 2-thread process whose address space may grow 100 MiB, 438 MiB or 726 MiB past
    its size after start-up; what each printed, by the MiB allowed."""
    result = subprocess.run(
        [sys.executable, "-c", SPLAT_UNDER_LIMITS],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, f"rc {result.returncode}: {result.stderr[-2000:]}"
    return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in result.stdout.splitlines()}


def test_failed_output_allocation_is_a_memory_error_naming_it(splat_under_limits):
    assert splat_under_limits[100].startswith("MemoryError cannot allocate the sums of shape (1, 6000, 6000)")


def test_failed_workspace_allocation_is_a_memory_error_not_an_abort(splat_under_limits):
    """Outputs fit, the workspace does not: the old kernel threw std::bad_alloc inside its
    OpenMP region and the process aborted."""
    assert splat_under_limits[438].startswith("MemoryError"), splat_under_limits


def test_workspace_does_not_grow_with_the_thread_count(splat_under_limits):
    """Room for the outputs and one workspace, not two: the old kernel gave each of the two
    threads its own (H+1) x (W+1) float64 image and aborted; one is enough for this canvas."""
    assert splat_under_limits[726].split() == ["ok", "50.0", "50.0", "1.0", "1.0"], splat_under_limits
