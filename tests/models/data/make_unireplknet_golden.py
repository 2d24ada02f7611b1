"""Make ``unireplknet_golden.pt`` with the OFFICIAL UniRepLKNet code (not part of erftools; see README.md).

    python tests/models/data/make_unireplknet_golden.py PATH/TO/UniRepLKNet [OUT.pt]

Imports ``unireplknet.py`` from the user's clone of github.com/AILab-CVC/UniRepLKNet (nothing of it is copied here).
Two cases, each with every parameter and BN statistic randomised as ``../shared/fixtures/unireplknet_tiny.pt`` is:

* ``kernels``: classification, the kernel sizes the shared fixture lacks (0, 5, 9, 11, 15, 17);
* ``downstream``: the official downstream mode (``init_cfg=dict(checkpoint=None)``, ``num_classes=None``: four
  feature maps through ``norm0..3``), with ``layer_scale_init_value=0`` (no layer scale) and kernels 3, 7, 13.

Per case: config, state_dict (training structure), input (2, 3, 48, 48), outputs (logits, or the four feature
maps), stages (the four stage outputs; classification only); after
the official ``reparameterize_unireplknet()``: reparam_keys ([key, shape] of the deploy state dict, in order),
reparam_outputs.
"""
import importlib.util
import sys
from pathlib import Path

import torch

CASES = {
    "kernels": dict(depths=(2, 1, 2, 1), dims=(8, 16, 24, 32), kernel_sizes=((0, 17), (15,), (11, 9), (5,)),
                    num_classes=7),
    "downstream": dict(depths=(1, 1, 2, 1), dims=(8, 16, 16, 24), kernel_sizes=((3,), (7,), (13, 3), (7,)),
                       num_classes=None, init_cfg=dict(checkpoint=None), layer_scale_init_value=0),
}


def load_official(repo: Path):
    spec = importlib.util.spec_from_file_location("official_unireplknet", repo / "unireplknet.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its @register_model looks the module up
    spec.loader.exec_module(mod)
    mod.get_root_logger = lambda: None  # the downstream init asks mmseg for a logger (not installed: a stub)
    return mod


@torch.no_grad()
def randomise(model: torch.nn.Module) -> None:
    """As the shared fixture: layer scale U(0.5, 1.5), GRN N(0, 0.3), other 1-D N(0, 0.1) (+1 for weights),
    conv/linear weights N(0, 1/fan_in), BN running_mean N(0, 0.1), running_var U(0.5, 1.5)."""
    for name, p in model.named_parameters():
        if name.endswith(".gamma") and p.dim() == 1:
            p.uniform_(0.5, 1.5)
        elif ".act.1." in name:
            p.normal_(0, 0.3)
        elif p.dim() == 1:
            p.normal_(0, 0.1)
            if name.endswith("weight"):
                p.add_(1)
        else:
            p.normal_(0, (1.0 / p[0].numel()) ** 0.5)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.normal_(0, 0.1)
        elif name.endswith("running_var"):
            b.uniform_(0.5, 1.5)


def run_case(official, config: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    model = official.UniRepLKNet(attempt_use_lk_impl=False, **config)
    randomise(model)
    model.eval()
    x = torch.randn(2, 3, 48, 48)
    stages = []
    hooks = [s.register_forward_hook(lambda m, i, o: stages.append(o.clone())) for s in model.stages]
    with torch.no_grad():
        out = model(x)
    train_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.reparameterize_unireplknet()
    with torch.no_grad():
        rep = model(x)
    for h in hooks:
        h.remove()
    cfg = {k: v for k, v in config.items() if k != "init_cfg"}
    return dict(config=cfg, state_dict=train_sd, input=x, outputs=out if isinstance(out, torch.Tensor) else list(out),
                stages=stages[:4] if config.get("num_classes") is not None else [], reparam_keys=[[k, list(v.shape)] for k, v in model.state_dict().items()],
                reparam_outputs=rep if isinstance(rep, torch.Tensor) else list(rep))


def main(argv):
    repo = Path(argv[1])
    out = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("unireplknet_golden.pt")
    official = load_official(repo)
    torch.save({name: run_case(official, cfg, seed) for seed, (name, cfg) in enumerate(CASES.items())}, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
