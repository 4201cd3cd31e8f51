"""The ETA of a training run follows its recent epochs, so a run slowed by another process says so."""

from vidtempo.training.run import EpochClock


def test_the_eta_follows_the_recent_epochs_not_the_run_mean():
    clock = EpochClock()
    for _ in range(30):
        clock.add(0.4)  # a quiet machine
    for _ in range(3):
        clock.add(44.0)  # another process started
    eta = clock.remaining_seconds(epochs_left=10)
    # The mean of all 33 epochs says about 44 s; the recent epochs say about 440 s.
    assert eta > 300


def test_the_eta_recovers_when_the_machine_is_quiet_again():
    clock = EpochClock()
    for seconds in [44.0] * 5 + [0.5] * 5:
        clock.add(seconds)
    assert clock.remaining_seconds(epochs_left=100) < 100


def test_no_eta_before_the_first_epoch():
    assert EpochClock().remaining_seconds(epochs_left=5) == 0.0
