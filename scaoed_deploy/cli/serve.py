"""``triton-repo`` and ``serve``: a Triton model repository from artifacts, and a server on it."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from ..errors import ScaoedError
from ..serve import RepoOptions, TritonServer, make_repository
from .common import emit_json, json_option, notice, progress_steps
from .main import cli


@cli.command("triton-repo")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--output",
    "-o",
    "repo",
    required=True,
    type=click.Path(file_okay=False),
    help="The model repository folder (made if missing; other models in it are kept).",
)
@click.option(
    "--python-backend",
    is_flag=True,
    help="Serve each artifact through scaoed-deploy's runners in Triton's python backend (what the "
    "bundled tritonserver of `serve` runs) instead of Triton's TensorRT/ONNX Runtime/OpenVINO backends.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Max batch of artifacts with a dynamic batch (an engine's comes from its profile).",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(0),
    default=2000,
    show_default=True,
    help="How long the dynamic batcher may hold a request to fill a batch (microseconds).",
)
@click.option("--instances", type=click.IntRange(1), default=1, show_default=True, help="Model instances.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="ONNX models on GPU or CPU instances (auto: GPU with Triton's backends, but CPU for an ONNX Runtime "
    "CPU INT8 file; CPU with the python backend).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads per instance.")
@click.option("--allow-unverified", is_flag=True, help="Serve artifacts that record no verification (foreign ONNX).")
@click.option("--overwrite", is_flag=True, help="Replace models of the same name already in the repository.")
@click.option(
    "--max-side",
    type=click.IntRange(16),
    default=None,
    help="Largest image side a request may have (dynamic sizes; default: what a full batch of them fits in "
    "half this machine's memory). Larger requests are refused with HTTP 400; clients tile.",
)
@json_option
def triton_repo(
    artifacts,
    repo,
    python_backend,
    max_batch,
    max_queue_delay_us,
    instances,
    device,
    threads,
    allow_unverified,
    overwrite,
    max_side,
    as_json,
):
    """A Triton Inference Server model repository from verified artifacts, one model per artifact."""
    options = RepoOptions(
        python_backend=python_backend,
        max_batch=max_batch,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        device=device,
        threads=threads,
        allow_unverified=allow_unverified,
        overwrite=overwrite,
        max_side=max_side,
    )
    with progress_steps(quiet=as_json) as step:
        result = make_repository(list(artifacts), repo, options, step)
    if instances > 1 and not threads and any(m["instance_kind"] == "KIND_CPU" for m in result["models"]):
        notice(
            f"note: each of the {instances} CPU instances will use every core of the serving machine; "
            "--threads (cores / instances) keeps them from competing"
        )
    result["next"] = (
        f"scaoed-deploy serve {repo}"
        if python_backend
        else f"tritonserver --model-repository={Path(repo).resolve()} (NVIDIA's Triton container)"
    )
    if as_json:
        emit_json(result)
        return
    click.echo(f"model repository {repo}:")
    for m in result["models"]:
        params = m["parameters"]
        if params.get("kind") == "package":  # an optimize package: each server takes its CPU class's choice
            runs = f"python backend (a package: each server picks its CPU class's choice of {params['classes']})"
        elif m["platform"] == "python":
            runs = f"python backend ({params['backend']} runner)"
        else:
            runs = m["platform"]
        dims = "x".join(str(d) for d in m["inputs"][0]["dims"])
        click.echo(
            f"  {m['name']}: {runs}, max batch {m['max_batch_size']}, {instances} x {m['instance_kind']}, "
            f"input {m['inputs'][0]['name']} {dims} <- {m['artifact']}"
        )
    click.echo(f"next: {result['next']}")


@cli.command()
@click.argument("repo", type=click.Path())
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address the endpoints listen on.")
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False),
    default=None,
    help="A full Triton install's tritonserver (default: the one bundled in nvidia-pytriton).",
)
@click.option(
    "--backend-directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Its backends folder (default: beside its bin/).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The server's log file (default: one in the temp folder, named on start).",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the server and its models to be ready.",
)
@json_option
def serve(
    repo, http_port, grpc_port, metrics_port, address, tritonserver, backend_directory, log_path, ready_timeout, as_json
):
    """Serve a model repository with tritonserver until Ctrl-C or SIGTERM."""
    server = TritonServer(
        repo, http_port, grpc_port, metrics_port, address, tritonserver, backend_directory, log_path, ready_timeout
    )

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with progress_steps(quiet=as_json) as step:
            server.start(step)
        facts = {
            "repository": str(repo),
            "models": server.models,
            "http": server.http_url,
            "grpc": server.grpc_url,
            "metrics": server.metrics_url,
            "log": str(server.log_path),
            "pid": server.process.pid,
        }
        if as_json:
            emit_json(facts)
        else:
            click.echo(f"serving {len(server.models)} model(s) from {repo}: {', '.join(server.models)}")
            click.echo(f"  HTTP    {server.http_url}\n  gRPC    {server.grpc_url}\n  metrics {server.metrics_url}")
            click.echo(f"  log     {server.log_path}")
            click.echo(
                f"try: scaoed-deploy denoise IMAGE OUT.png --server {server.http_url}"
                + (f" --model {next(iter(server.models))}" if len(server.models) > 1 else "")
            )
            click.echo("Ctrl-C stops it")
        code = server.wait()
        raise ScaoedError(f"tritonserver exited by itself (code {code}; log: {server.log_path})")
    except KeyboardInterrupt:
        if server.running():
            notice("stopping tritonserver")
        code = server.stop()
        notice(f"tritonserver stopped (exit code {code})" if code is not None else "stopped")
    finally:
        server.stop()
        server.cleanup()
        signal.signal(signal.SIGTERM, previous)
