// The commit a hub revision (branch or tag) points to now, so that the model and everything made
// with it are stored under `<id>@<commit>`, never under a branch name that moves. Cheap and never
// cached (cache false): a branch is re-resolved on every run. main.nf skips it for a revision
// that is already a 40-hex commit (offline runs pin one).
process RESOLVE_MODEL {
    tag "${model_meta.model}@${model_meta.revision}"
    label 'process_single'
    cache false

    input:
    val(model_meta)

    output:
    tuple val(model_meta), env('commit'), emit: commit
    tuple val("${task.process}"), val('virnucpro'), eval('virnucpro-fetch-model --version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('huggingface_hub'), eval("python3 -c 'from importlib.metadata import version; print(version(\"huggingface_hub\"))'"), emit: versions_huggingface_hub, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    commit=\$(virnucpro-fetch-model --model ${model_meta.model} --revision ${model_meta.revision} --resolve ${args})
    """

    stub:
    """
    commit=0000000000000000000000000000000000000000
    """
}
