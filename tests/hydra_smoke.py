"""Train each config of a jobs file for its overrides, the way fairseq-hydra-train does (hydra
composition, then fairseq_cli.hydra_train._hydra_main), in one process. Used by test_recipes."""
import json
import sys

from fairseq.dataclass.initialize import hydra_init
from fairseq_cli.hydra_train import _hydra_main
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra


def main(config_dir, jobs_file):
    for job in json.load(open(jobs_file)):
        GlobalHydra.instance().clear()
        hydra_init(job["name"])
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose(config_name=job["name"], overrides=job["overrides"])
        _hydra_main(cfg)
        print(f"trained {job['name']}: {cfg.optimization.max_update} updates", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
