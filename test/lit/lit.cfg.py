# -*- Python -*-
# lit configuration for Loom: the tests live in test/ beside this folder,
# mirroring the source tree (dialects/, passes/, tools/, e2e/).
import os
import shutil
import subprocess

import lit.formats
from lit.llvm import llvm_config

config.name = "Loom"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(os.path.dirname(__file__))
config.test_exec_root = os.path.join(config.loom_obj_root, "test", "lit")
config.excludes = ["lit", "unit", "CMakeLists.txt", "Inputs", "support"]

config.substitutions.append(("%loom_src", config.loom_src_root))
config.substitutions.append(("%shared", config.loom_shared_dir))
config.substitutions.append(("%python", "/usr/bin/python3"))

llvm_config.with_system_environment(["HOME", "TMPDIR"])
llvm_config.use_default_substitutions()
llvm_config.add_tool_substitutions(
    ["loom-opt", "loomc", "loom-run"], [config.loom_tools_dir])
llvm_config.with_environment("PATH", config.loom_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

if os.path.isdir(os.path.join(config.loom_shared_dir, "golden")):
    config.available_features.add("shared")
else:
    lit_config.note("../shared not found at %s: tests that need its golden "
                    "outputs are reported UNSUPPORTED" % config.loom_shared_dir)

# Python modules of /usr/bin/python3 that the references run at test time
# need (scripts/setup.sh installs them): numpy; PyTorch for ../shared's
# Huginn one; jinja2 for the chat templates'. Each is a feature of the same
# name.
for module, package in (("numpy", "python3-numpy"), ("torch", "python3-torch"),
                        ("jinja2", "python3-jinja2")):
    if subprocess.run(["/usr/bin/python3", "-c", "import " + module],
                      stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        config.available_features.add(module)
    else:
        lit_config.note("/usr/bin/python3 has no %s (apt-get install %s): "
                        "tests that need it are reported UNSUPPORTED"
                        % (module, package))

# A machine with an NVIDIA GPU (the CUDA backend's checks without one are
# then UNSUPPORTED; with one they run in scripts/gpu-check.sh).
nvidia_smi = shutil.which("nvidia-smi")
if nvidia_smi and subprocess.run([nvidia_smi, "-L"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("cuda-device")
