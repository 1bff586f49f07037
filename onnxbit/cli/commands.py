"""Every CLI command module, imported for the side effect of registering itself
on the groups in main.py. Add one line per command module."""
from onnxbit.cli import bench_matmul  # noqa: F401
from onnxbit.cli import quantize  # noqa: F401
from onnxbit.cli import inspect  # noqa: F401
from onnxbit.cli import bench_codecs  # noqa: F401
from onnxbit.cli import bench_convert  # noqa: F401
from onnxbit.cli import verify  # noqa: F401
from onnxbit.cli import demo  # noqa: F401
from onnxbit.cli import bench_conv  # noqa: F401
from onnxbit.cli import bench_model  # noqa: F401
from onnxbit.cli import calibrate  # noqa: F401
from onnxbit.cli import bench_formats  # noqa: F401
from onnxbit.cli import bench_llm  # noqa: F401
