// Join one shard's DNABERT-S and ESM-2 embeddings into 3328-wide features (CPU).
// Stored (conf/modules.config) under meta.features_key, which main.nf derives from the store
// folders of the two embeddings, so it carries all of their keys.
process MERGE {
    tag "${meta.shard}"
    label 'process_single'

    input:
    tuple val(meta), path(dnabert), path(esm)

    output:
    tuple val(meta), path("${meta.shard}.features.h5"), emit: features
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-merge --nucleotide ${dnabert} --protein ${esm} --output ${meta.shard}.features.h5 ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.shard}.features.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
