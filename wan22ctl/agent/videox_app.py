"""VideoX-Fun's Gradio UI, started from the launch plan `wan22ctl-agent ui` wrote to WAN22_VIDEOX_LAUNCH.

Run as a script by the image's Python (the one with torch, gradio and VideoX-Fun's
requirements), in the VideoX-Fun checkout; it imports nothing from wan22ctl. It does what
VideoX-Fun's examples/*/app.py do — `ui()` or `ui_host()`, `demo.queue().launch()`, then the
inference and model-switch HTTP APIs — with the values chosen by the launcher instead of
constants edited into app.py. Where setuptools no longer has pkg_resources, it supplies the one
call VideoX-Fun makes of it.
"""

import importlib
import importlib.metadata
import json
import os
import sys
import time
import types


def provide_pkg_resources() -> None:
    """Stand in for setuptools' pkg_resources where it is gone (recent setuptools no longer ships
    it; 84.2.1, which torch 2.14.1 pulls into a fresh venv, has none). VideoX-Fun's
    videox_fun/ui/controller.py imports it at module level, only for
    `pkg_resources.get_distribution("gradio").version`; without it the UI dies at import."""
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass

    def get_distribution(name):
        return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))

    shim = types.ModuleType("pkg_resources")
    shim.get_distribution = get_distribution
    sys.modules["pkg_resources"] = shim


def main() -> None:
    plan = json.loads(os.environ["WAN22_VIDEOX_LAUNCH"])
    os.chdir(plan["videox_dir"])
    sys.path.insert(0, plan["videox_dir"])

    provide_pkg_resources()
    import torch
    from videox_fun.api.api import infer_forward_api, update_diffusion_transformer_api
    from videox_fun.ui import controller as videox_controller

    ui = importlib.import_module(plan["ui_module"])
    scheduler_dict = getattr(videox_controller, plan["scheduler_dict"])
    # VideoX-Fun's advice: bfloat16 where the GPU supports it (V100/2080 Ti do not).
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    weight_dtype = torch.bfloat16 if bf16 else torch.float16
    config = [plan["config_path"]] if plan["config_path"] else []
    compile_dit = False
    if plan["ui_mode"] == "host":
        demo, controller = ui.ui_host(plan["gpu_memory_mode"], scheduler_dict, plan["model_path"],
                                      plan["model_type"], *config, compile_dit, weight_dtype,
                                      savedir_sample=plan["savedir"])
    else:
        demo, controller = ui.ui(plan["gpu_memory_mode"], scheduler_dict, *config, compile_dit,
                                 weight_dtype, savedir_sample=plan["savedir"])
    app, _, _ = demo.queue(status_update_rate=1).launch(
        server_name=plan["server_name"], server_port=plan["server_port"], prevent_thread_lock=True,
    )
    infer_forward_api(None, app, controller)
    update_diffusion_transformer_api(None, app, controller)
    print(f"VideoX-Fun UI listening on {plan['server_name']}:{plan['server_port']}", flush=True)
    while True:
        time.sleep(5)


if __name__ == "__main__":
    main()
