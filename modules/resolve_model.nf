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
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    commit=\$(virnucpro-fetch-model --model ${model_meta.model} --revision ${model_meta.revision} --resolve ${args})

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        huggingface_hub: \$(python3 -c 'import huggingface_hub; print(huggingface_hub.__version__)')
    END_VERSIONS
    """

    stub:
    """
    commit=0000000000000000000000000000000000000000

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
