"""Energy and CO₂ of a piece of work, measured by codecarbon's *offline* tracker.

`OfflineEmissionsTracker` never contacts a server (the online `EmissionsTracker` looks up the
location and can post results): the grid's carbon intensity comes from codecarbon's bundled
per-country table (Korea, `KOR`, by default). Power is read from RAPL / NVML where the machine
exposes them, otherwise estimated from the CPU's TDP and the RAM size — `method` says which.
"""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def track_energy(country: str = "KOR", enabled: bool = True, interval_s: float = 15.0):
    """Yield a dict that holds, after the block: kwh, co2_kg, seconds, cpu/gpu/ram power (W), hardware."""
    result: dict = {}
    if not enabled:
        yield result
        return
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after the import, which sets its own level

    tracker = OfflineEmissionsTracker(country_iso_code=country, output_methods=[], log_level="error", measure_power_secs=interval_s,
                                      allow_multiple_runs=True, tracking_mode="process")
    tracker.start()
    try:
        yield result
    finally:
        co2 = tracker.stop()
        data = tracker.final_emissions_data
        result.update(
            kwh=float(data.energy_consumed), co2_kg=float(co2 or 0.0), seconds=round(float(data.duration), 2), country=country,
            cpu_w=round(float(data.cpu_power), 2), gpu_w=round(float(data.gpu_power), 2), ram_w=round(float(data.ram_power), 2),
            hardware=f"{data.cpu_count} × {data.cpu_model}" + (f", {data.gpu_count} × {data.gpu_model}" if data.gpu_count else ""),
            tracker=type(tracker).__name__,
        )
