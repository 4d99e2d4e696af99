"""`python -m reproduce gs_vgg16 seeds`: the Hong 2021 study over several seeds, and the spread.

    python -m reproduce gs_vgg16 seeds --profile default --seeds 0,1,2

Each seed is a new face phantom, fold assignment, initialisation, augmentation stream and
bootstrap; every seed other than `--seed` runs `gs_vgg16 all` into `<runs>/seed<s>` and
`<results>/seeds/seed<s>/`, then `<results>/seed_spread.csv` and `.md` give every headline
number (reproduce/gs_vgg16/headline.py) per seed, mean, SD, range, the interval another run is
expected to fall in, and the issue's targets for the mean and the worst seed
(reproduce/seeds.py). On the default profile each extra seed costs one `gs_vgg16 all`.
"""
from __future__ import annotations

import sys

from reproduce import seeds as seed_runs
from reproduce.gs_vgg16 import all as gs_all
from reproduce.gs_vgg16 import headline, pipeline

NAME = seed_runs.NAME
SPEC = seed_runs.SeedStudy(title="Hong 2021 study", run_all=gs_all.main,
                           build_headline=headline.build_headline, key="model",
                           key_title="model", targets=headline.TARGETS, say=pipeline.say,
                           architecture=pipeline.ARCH)

build_parser, main = seed_runs.command(SPEC, "python -m reproduce gs_vgg16 seeds",
                                       __doc__.split("\n\n")[0], pipeline.add_common_args,
                                       pipeline.context_from_args, pipeline.common_argv)


if __name__ == "__main__":
    sys.exit(main())
