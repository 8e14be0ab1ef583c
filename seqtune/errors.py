"""User errors: what is wrong and how to fix it, printed as one line without a traceback."""


class SeqtuneError(Exception):
    """A problem with the user's input (flags, files, data, model) that the user can fix.

    The message names the flag, column or file, says what was found and what to do instead.
    Several problems found at once are joined into one message, one per line.
    """

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnscorableSplit(SeqtuneError):
    """The split asked to be scored is absent or unlabelled (the model itself is fine: a sweep saves it unscored)."""


class UnseenLabels(SeqtuneError):
    """Labels in an evaluation split that the training split never has."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (loading, tokenizing): unwinds like Ctrl-C, so locks and an output folder
    that holds nothing yet are cleaned up; the CLI exits 143."""


class StoppedBySignal(SeqtuneError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: str):
        import signal

        self.exit_code = 128 + signum
        self.finished = False
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing {checkpoint}")


class StoppedAfterFinishing(StoppedBySignal):
    """SIGTERM/SIGINT while the finished run was being saved: the save completed, then the command stops (a sweep
    does not go on to its next run)."""

    def __init__(self, signum: int, output_dir: str):
        import signal

        SeqtuneError.__init__(self, f"stopped by {signal.Signals(signum).name}, which came while the finished run "
                                    f"was being saved: {output_dir} holds the whole run")
        self.exit_code, self.finished = 128 + signum, True
