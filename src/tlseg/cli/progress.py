"""Progress bars of the command line (the library reports progress through callbacks)."""

from __future__ import annotations

import sys


class StepBar:
    """A progress bar on stderr, made at the first step and closed at the last, so that
    what the command logs after the work (the plate summary, the calibration's tuning) is
    not drawn under it again, and so that an error raised before the first step stays one
    line; ``after`` is printed once the last step is done. ``postfix`` (a dict) is shown
    beside the bar, e.g. the training losses."""

    def __init__(self, desc: str, unit: str, after: str | None = None):
        self.desc, self.unit, self.after = desc, unit, after
        self.bar = None
        self.done = False

    def __call__(self, step: int, total: int, postfix: dict | None = None) -> None:
        if self.done:
            return
        if self.bar is None:
            from tqdm import tqdm

            # counted from this step on: the rate and the time left are not skewed by the
            # work before the first report (or by a resumed run's finished steps)
            self.bar = tqdm(total=total, initial=step, desc=self.desc, unit=self.unit,
                            file=sys.stderr)
        self.bar.n = step
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()
        if step >= total:
            self.close()
            if self.after:
                print(self.after, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None and not self.done:
            self.bar.close()
        self.done = True
