"""The experiment grid: experiment_grid (params.yaml:experiment → partitions) → grid_cells → claims_report.

Every cell of the grid is a dynamic partition of grid_cells: materialize one, a few or all of them (a backfill);
a cell that already finished with today's settings is reused, so a rerun costs only the new cells.
"""

import dagster as dg

from mdpo_pipeline.defs.assets.training import reference_logprobs
from mdpo_pipeline.defs.metadata import dagster_run_tags, md_image, md_table, mlflow_links, rounded
from mdpo_pipeline.defs.resources import JudgeResource, MlflowResource, ProjectResource, TrainingLauncher
from mdpo_pipeline.pipeline.grid import GridPlan, run_and_log_cell, run_claims_report

GROUP = "experiment"
#: One partition per cell of params.yaml:experiment (``experiment_grid`` adds them), e.g. ``mdpo-s1``.
grid_cell_partitions = dg.DynamicPartitionsDefinition(name="grid_cell")


@dg.asset(group_name=GROUP, deps=[reference_logprobs], kinds={"python"})
def experiment_grid(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    """params.yaml:experiment expanded into cells (methods × seeds × axes, and a base cell per data variant),
    each added as a partition of grid_cells."""
    plan = GridPlan(project.project())
    keys = [c.key for c in plan.cells]
    known = set(context.instance.get_dynamic_partitions(grid_cell_partitions.name))
    context.instance.add_dynamic_partitions(grid_cell_partitions.name, [k for k in keys if k not in known])
    pending = {c.key for c in plan.pending()}
    exp = plan.experiment
    return dg.MaterializeResult(metadata={
        "experiment": exp.name,
        "cells": len(keys),
        "pending": len(pending),
        "methods": ", ".join(exp.methods),
        "seeds": ", ".join(map(str, exp.seeds)),
        "axes": md_table({k: ", ".join(map(str, v)) for k, v in exp.axes.items()}, "axis", "values")
        if exp.axes else "none",
        "cell_status": md_table({k: "pending" if k in pending else "finished" for k in keys}, "cell", "status"),
        "not_in_grid": ", ".join(sorted(known - set(keys))) or "none",
        "path": dg.MetadataValue.path(str(plan.dir)),
    })


@dg.asset(group_name=GROUP, partitions_def=grid_cell_partitions, deps=[experiment_grid], kinds={"pytorch", "mlflow"})
def grid_cells(
    context: dg.AssetExecutionContext, project: ProjectResource, launcher: TrainingLauncher, mlflow: MlflowResource,
    judge: JudgeResource,
) -> dg.MaterializeResult:
    """One cell of the grid: its adapter trained (through the launcher), scored on the grid's benchmark split and
    probed for image use; an MLflow child run of the grid's parent run."""
    proj = project.project()
    record = run_and_log_cell(
        proj, context.partition_key, uri=mlflow.uri(proj), experiment=mlflow.experiment,
        tags=dagster_run_tags(context), launch=lambda cfg: launcher.launch(cfg, context, proj),
        judge=judge.settings(), log=context.log.info,
    )
    meta = {
        "method": record["method"],
        "seed": str(record["seed"]),
        "axes": md_table(record["axes"], "axis", "value") if record["axes"] else "none",
        "reused": bool(record.get("reused")),
        "scores": md_table({k: rounded(v) for k, v in record["scores"].items()}, "metric", "value"),
        "timing": md_table(record["timing"], "phase", "seconds"),
        "path": dg.MetadataValue.path(str(proj.root / record["adapter"]).rsplit("/", 1)[0] if record["adapter"]
                                      else record["cell"]),
    }
    if record.get("probe"):
        meta["probe"] = md_table({k: rounded(v) for k, v in record["probe"].items()}, "probe", "value")
    if record.get("mlflow"):
        meta |= mlflow_links(run_url=record["mlflow"]["url"])
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, deps=[grid_cells], kinds={"markdown", "mlflow"})
def claims_report(project: ProjectResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """The paper's claims checked on the grid: Tables 1–3, paired differences with 95 % intervals, CHAIR at matched
    recall, the image-use probe and a verdict per claim (reproduced / not reproduced / inconclusive)."""
    proj = project.project()
    result = run_claims_report(proj, uri=mlflow.uri(proj), experiment=mlflow.experiment)
    verdicts = {f"{c['id']}. {c['claim']}": c["verdict"] for c in result["claims"]}
    meta = {
        "claims": dg.MetadataValue.md(result["markdown"]),
        "verdicts": md_table(verdicts, "claim", "verdict"),
        "cells": result["cells"],
        "pending": ", ".join(result["pending"]) or "none",
        "path": dg.MetadataValue.path(result["path"]),
    }
    figures = [p for p in result["figures"] if str(p).endswith("claims_bars.png")]
    if figures:
        meta["bars"] = md_image(figures[0], alt="claims: mean ± std per method")
    if result.get("mlflow"):
        meta |= mlflow_links(run_url=result["mlflow"]["url"])
    return dg.MaterializeResult(metadata=meta)


grid_assets = [experiment_grid, grid_cells, claims_report]
