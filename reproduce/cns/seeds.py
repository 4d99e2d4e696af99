"""`python -m reproduce cns seeds`: the CNS study over several seeds, and the spread.

    python -m reproduce cns seeds --profile default --seeds 0,1,2

Each seed is a new phantom, fold assignment, initialisation, augmentation stream and bootstrap;
every seed other than `--seed` runs `cns all` into `<runs>/seed<s>` and
`<results>/seeds/seed<s>/`, then `<results>/seed_spread.csv` and `.md` give every headline
number (reproduce/cns/headline.py) per seed, mean, SD, range, the interval another run is
expected to fall in, and the issue's targets for the mean and the worst seed
(reproduce/seeds.py). On the default profile each extra seed costs one `cns all` (about 15
minutes on a 2-core CPU).
"""
from __future__ import annotations

import sys

from reproduce import seeds as seed_runs
from reproduce.cns import all as cns_all
from reproduce.cns import headline, pipeline

NAME = seed_runs.NAME
SPEC = seed_runs.SeedStudy(title="CNS study", run_all=cns_all.main,
                           build_headline=headline.build_headline, key="task", key_title="task",
                           targets=headline.TARGETS, say=pipeline.say,
                           architecture=pipeline.ARCH)

build_parser, main = seed_runs.command(SPEC, "python -m reproduce cns seeds",
                                       __doc__.split("\n\n")[0], pipeline.add_common_args,
                                       pipeline.context_from_args, pipeline.common_argv)


if __name__ == "__main__":
    sys.exit(main())
