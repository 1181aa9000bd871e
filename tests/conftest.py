"""Shared test setup: no network, two host devices for parallel chains, small models."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="numpyro-slt-hf-"))
# The CLI turns on JAX's persistent compilation cache for its run. Not in this process: jaxlib
# 0.10.2 segfaulted loading cached programs into a test session that had compiled hundreds of
# others. test_study runs the CLI with the cache in fresh processes instead.
os.environ["NUMPYRO_SLT_COMPILATION_CACHE"] = "off"
# Two CPU devices so that chain_method="parallel" really runs on two devices.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()

import pytest  # noqa: E402

from numpyro_slt.known_models import make_linear_data  # noqa: E402


@pytest.fixture(scope="session")
def linear_data():
    return make_linear_data()


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Free every compiled program after each test module. A whole session otherwise keeps
    thousands of XLA executables, each with its own memory mappings, and with jaxlib 0.10.2 the
    session crashed (segfault inside XLA compilation) late in the run."""
    yield
    import jax

    jax.clear_caches()
