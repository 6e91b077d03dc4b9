import os

import pytest
from hypothesis import HealthCheck, settings

from dcqformat.decode import kernels

_quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_quiet, derandomize=True)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=_quiet)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=[True, False], ids=["jit", "nojit"])
def jit(request):
    before = kernels.jit_enabled()
    kernels.set_jit_enabled(request.param)
    yield request.param
    kernels.set_jit_enabled(before)
