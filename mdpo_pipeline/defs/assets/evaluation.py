"""The evaluation half: benchmark_scores (per model partition) → comparison_report → champion (registry gate).

Each asset calls one function of ``mdpo_pipeline.pipeline.evaluate``; scores go to the adapter's MLflow run and
to Dagster metadata; the gate is a check per partition that decides promotion only (a model that fails it is still a
finished, scored model: its run succeeds and the report shows it), and ``champion`` moves the registry aliases.
"""

import dagster as dg

from mdpo_pipeline.core.methods import BASE
from mdpo_pipeline.defs.assets.training import adapters, base_model, model_partitions
from mdpo_pipeline.defs.metadata import (
    dagster_run_tags,
    md_image,
    mlflow_links,
    summary_metadata,
)
from mdpo_pipeline.defs.resources import JudgeResource, MlflowResource, ProjectResource
from mdpo_pipeline.integrations.tracking import (
    model_version_ui_url,
    run_ui_url,
    tag_run,
)
from mdpo_pipeline.pipeline.evaluate import (
    gate_partition,
    run_benchmark_scores,
    run_comparison_report,
    run_registry_decision,
)

GROUP = "evaluation"


@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[base_model, adapters],
    kinds={"pytorch", "mlflow"},
    automation_condition=dg.AutomationCondition.eager(),
)
def benchmark_scores(
    context: dg.AssetExecutionContext, project: ProjectResource, mlflow: MlflowResource, judge: JudgeResource
) -> dg.MaterializeResult:
    """Object HalBench (CHAIR), AMBER (generative + discriminative) and MMHal-Bench scores of one model:
    the base model or one adapter."""

    proj = project.project()
    result = run_benchmark_scores(
        proj, context.partition_key, uri=mlflow.uri(proj), experiment=mlflow.experiment, judge=judge.settings(),
        progress=True, log=context.log.info,
    )
    meta = summary_metadata(result["scores"])
    meta |= {"judge": result["judge"] or "none", "scores_path": dg.MetadataValue.path(result["path"])}
    if result.get("mlflow_run_id"):
        experiment_id = tag_run(mlflow.uri(proj), result["mlflow_run_id"], dagster_run_tags(context))
        meta["mlflow_run_id"] = result["mlflow_run_id"]
        meta |= mlflow_links(run_ui_url(experiment_id, result["mlflow_run_id"]))
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=benchmark_scores, blocking=False, description="Registry gate: better than the base model on "
                "the primary hallucination metric without a coverage drop beyond the configured bound. It decides "
                "promotion only: a model that fails it keeps its scores and its run succeeds (a WARN).")
def beats_base_model(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    """The gate per partition; the base model's own partition passes by definition."""

    partition = context.partition_key if context.has_partition_key else BASE
    decision = gate_partition(project.project(), partition)
    return dg.AssetCheckResult(
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"partition": partition,
                  "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                  **summary_metadata({k: v for k, v in decision.numbers.items() if isinstance(v, int | float)})},
    )


@dg.asset(group_name=GROUP, deps=[benchmark_scores], kinds={"markdown", "mlflow"},
          automation_condition=dg.AutomationCondition.eager())
def comparison_report(
    context: dg.AssetExecutionContext, project: ProjectResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The paper's Table 1 over every scored model (with the paper's rows for paper models) and a bar chart."""

    proj = project.project()
    result = run_comparison_report(proj, uri=mlflow.uri(proj), experiment=mlflow.experiment,
                                   tags=dagster_run_tags(context))
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(result["markdown"]),
        "chart": md_image(result["chart"], alt="benchmark comparison"),
        "models": len(result["rows"]),
        "left_out": dg.MetadataValue.md("\n".join(f"- {k}: {why}" for k, why in result["left_out"].items()) or "none"),
        "path": dg.MetadataValue.path(result["path"]),
        **mlflow_links(run_ui_url(result["experiment_id"], result["mlflow_run_id"])
                       if result.get("mlflow_run_id") else None),
    })


@dg.asset(group_name=GROUP, deps=[comparison_report], kinds={"mlflow"},
          automation_condition=dg.AutomationCondition.eager())
def champion(project: ProjectResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """The registry decision: the best adapter that passes the gate becomes `champion` if it beats the current
    one (which keeps `previous`); every decision is recorded on its model version."""

    proj = project.project()
    result = run_registry_decision(proj, uri=mlflow.uri(proj))
    lines = ["| candidate | passed | promoted | reasons |", "|---|---|---|---|"]
    lines += [f"| {d['candidate']} | {d['passed']} | {d['promote']} | {'; '.join(d['reasons'])} |"
              for d in result["decisions"]]
    return dg.MaterializeResult(metadata={
        "champion_version": str(result["champion_after"]),
        "champion_before": str(result["champion_before"]),
        "champion_method": str(result.get("champion_method")),
        "decisions": dg.MetadataValue.md("\n".join(lines)),
        "left_out": dg.MetadataValue.md("\n".join(f"- {k}: {why}" for k, why in result["left_out"].items()) or "none"),
        **mlflow_links(version_url=model_version_ui_url(result["model"], result["champion_after"])
                       if result["champion_after"] else None),
    })


evaluation_assets = [benchmark_scores, comparison_report, champion]
evaluation_checks = [beats_base_model]
