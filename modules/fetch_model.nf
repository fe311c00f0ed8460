// Snapshot a model from the Hugging Face hub once (virnucpro-fetch-model), at the commit
// RESOLVE_MODEL found, so cluster and cloud nodes read it from the store instead of each
// downloading it. conf/modules.config stores it under `<store_dir>/models/<model_meta.id>`
// (`<id with / as -->@<commit>`). Not run for a local model folder (main.nf passes the folder).
process FETCH_MODEL {
    tag "${model_meta.id}"
    label 'process_single'

    input:
    val(model_meta)

    output:
    tuple val(model_meta), path('model'), emit: model
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    // Configs, tokenizer files and one weight format (safetensors, else .bin), at that commit
    // (recorded in model/virnucpro_model.json).
    def args = task.ext.args ?: ''
    """
    virnucpro-fetch-model --model ${model_meta.model} --revision ${model_meta.commit} --outdir model ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        huggingface_hub: \$(python3 -c 'import huggingface_hub; print(huggingface_hub.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p model
    touch model/config.json model/virnucpro_model.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
