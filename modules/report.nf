// The self-contained report.html of one sample, from its CLASSIFY tables (CPU). Cheap: published
// beside the tables, not stored. ext.args (conf/modules.config): --chunk_size, --threshold.
process REPORT {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(predictions), path(summary)

    output:
    tuple val(meta), path('report.html'), emit: report
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-report --predictions ${predictions} --summary ${summary} --outdir . --name ${meta.id} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        matplotlib: \$(python3 -c 'import matplotlib; print(matplotlib.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
