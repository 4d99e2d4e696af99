"""`python -m reproduce pgds seeds`: the Pgds study over several seeds, and the spread.

    python -m reproduce pgds seeds --profile default --seeds 0,1,2

Each seed is a new phantom, split, initialisation, augmentation stream and bootstrap; every
seed other than `--seed` runs `pgds all` into `<runs>/seed<s>` and `<results>/seeds/seed<s>/`,
then `<results>/seed_spread.csv` and `.md` give every headline number (reproduce/pgds/headline.py)
per seed, mean, SD, range and the interval another run is expected to fall in
(reproduce/seeds.py says how). On the default profile each extra seed costs about one
./run_all.sh of Pgds (about 20 minutes).
"""
from __future__ import annotations

import sys

from reproduce import seeds as seed_runs
from reproduce.pgds import all as pgds_all
from reproduce.pgds import headline, pipeline

NAME = seed_runs.NAME
SPEC = seed_runs.SeedStudy(title="Pgds study", run_all=pgds_all.main,
                           build_headline=headline.build_headline, key="model", key_title="model",
                           targets=headline.TARGETS, say=pipeline.say,
                           architecture="pgds_resnet")

build_parser, main = seed_runs.command(SPEC, "python -m reproduce pgds seeds",
                                       __doc__.split("\n\n")[0], pipeline.add_common_args,
                                       pipeline.context_from_args, pgds_all.common_argv)


if __name__ == "__main__":
    sys.exit(main())
