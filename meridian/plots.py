"""Every plot an asset attaches (training curves, drift, performance, health, cost): matplotlib figures to PNG bytes."""

import io

import numpy as np


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def drift_plot(rows: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ok": "#4c9a2a", "warn": "#e0a100", "error": "#c0392b", "no_data": "#999999"}
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    names = [r["column"] for r in rows]
    values = [r["value"] or 0.0 for r in rows]
    ax.barh(names, values, color=[colours[r["status"]] for r in rows])
    ax.set_xlabel("drift statistic (PSI for numeric, Jensen-Shannon for categorical)")
    ax.axvline(0.1, color="#e0a100", linestyle="--", linewidth=1)
    ax.axvline(0.25, color="#c0392b", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_title(title)
    fig.tight_layout()
    return figure_png(fig)


def performance_plot(rows: list[dict], region: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("pr_auc") is not None]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for version in sorted({r["model_version"] for r in scored}):
        mine = [r for r in scored if r["model_version"] == version]
        ax.plot([r["day"] for r in mine], [r["pr_auc"] for r in mine], marker="o", label=f"v{version} PR-AUC")
        ax.plot(
            [r["day"] for r in mine],
            [r["roc_auc"] for r in mine],
            linestyle="--",
            label=f"v{version} ROC-AUC",
        )
    ax.set_ylim(0, 1.02)
    ax.set_title(f"fraud-{region}: matured performance by day")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def health_plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    regions = [r["region"] for r in rows]
    ax.bar(regions, [r["alerts_error_24h"] for r in rows], color="#c0392b", label="ERROR")
    ax.bar(
        regions,
        [r["alerts_warn_24h"] for r in rows],
        bottom=[r["alerts_error_24h"] for r in rows],
        color="#e0a100",
        label="WARN",
    )
    for i, r in enumerate(rows):
        ax.annotate(
            f"drift: {r['drift']}\nv{r['champion_version']}", (i, 0), ha="center", va="bottom", fontsize=8
        )
    ax.set_ylabel("alerts, last 24 h")
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def cost_plot(per_region: list[dict]) -> bytes:
    """Stacked storage, transfer and compute cost per region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [r["region"] for r in per_region]
    bottom = [0.0] * len(labels)
    for part in ("storage_usd_month", "transfer_usd", "compute_usd"):
        values = [r[part] for r in per_region]
        ax.bar(labels, values, bottom=bottom, label=part.replace("_usd", "").replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("USD")
    ax.set_title("Meridian cost by region (storage per month, transfer and compute over 30 days)")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def curves_png(y: np.ndarray, p: np.ndarray, title: str) -> bytes:
    """ROC and precision-recall curves of scores `p` for labels `y`, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=80)
    left.plot(fpr, tpr, color="#3b5bdb")
    left.plot([0, 1], [0, 1], color="#adb5bd", linestyle="--", linewidth=1)
    left.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC (AUC {roc_auc_score(y, p):.3f})",
    )
    right.plot(recall, precision, color="#e8590c")
    right.axhline(y.mean(), color="#adb5bd", linestyle="--", linewidth=1)
    right.set(
        xlabel="recall",
        ylabel="precision",
        title=f"Precision-recall (AP {average_precision_score(y, p):.3f})",
        ylim=(0, 1.02),
    )
    fig.suptitle(title)
    fig.tight_layout()
    return figure_png(fig)
