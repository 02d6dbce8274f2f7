"""Clara operator: fan-in of the segmentations into /output/report.json and a readable report.txt."""

import json
from pathlib import Path

meta = json.loads(Path("/volume/meta.json").read_text())
findings = [json.loads(p.read_text()) for p in sorted(Path("/").glob("seg-*/stats.json"))]
report = {"patient_id": meta["patient_id"], "series_uid": meta["series_uid"], "findings": findings}
Path("/output/report.json").write_text(json.dumps(report, indent=2))
lines = [f"Patient {meta['patient_id']}  series {meta['series_uid']}"]
lines += [f"  {f['label']:<6} {f['volume_ml']:>8.1f} mL  ({f['voxels']} voxels, model {f['model']})" for f in findings]
Path("/output/report.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
