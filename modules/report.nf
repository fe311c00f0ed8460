// The self-contained report.html of one input file, from its CLASSIFY tables (CPU). Cheap, so it
// is not stored, only published beside the tables.
process REPORT {
    tag "${meta.id}"
    label 'process_single'
    publishDir "${params.outdir}/${meta.id}", mode: params.publish_dir_mode

    input:
    tuple val(meta), path(predictions), path(summary)

    output:
    tuple val(meta), path('report.html'), emit: report
    path 'versions.yml', emit: versions

    script:
    def threshold = params.threshold != null ? "--threshold ${params.threshold}" : ''
    def args = task.ext.args ?: ''
    """
    virnucpro-report --predictions ${predictions} --summary ${summary} --outdir . --chunk_size ${params.chunk_size} --name ${meta.id} ${threshold} ${args}

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
