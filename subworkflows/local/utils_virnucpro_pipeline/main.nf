/*
 * Helper functions of the virnucpro pipeline (nf-core's utils_<pipeline>_pipeline place): sample
 * names and ids, shard pairing and meta, the store's content keys and caches, model keys, and
 * the versions file. main.nf includes them; they read no params (the workflow passes them in).
 * tests/test_nextflow_static.py runs them under Groovy.
 */

include { samplesheetToList } from 'plugin/nf-schema'

// The fields the pipeline adds to a sample's meta for each of its shards; sampleMeta() takes them off,
// so the sample's own meta (whatever fields the samplesheet gives it) reaches CLASSIFY unchanged.
def shardFields() {
    return ['shard', 'shard_index', 'shard_count', 'md5', 'features_key']
}

// The tools' `<stem>` rule (SPEC 3): name without `.gz` and without a FASTA extension.
def fastaStem(String name) {
    def base = name.endsWith('.gz') ? withoutSuffix(name, '.gz') : name
    def ext = ['.fa', '.fasta', '.fna', '.ffn', '.faa', '.fas'].find { suffix -> base.endsWith(suffix) }
    return ext ? withoutSuffix(base, ext) : base
}

def withoutSuffix(String name, String suffix) {
    return name.substring(0, name.length() - suffix.length())
}

def md5Hex(String text) {
    return java.security.MessageDigest.getInstance('MD5').digest(text.getBytes('UTF-8')).encodeHex().toString()
}

// `md5sum` lines (`<hash>  <name>`) -> [name: hash]
def readChecksums(checksums) {
    return checksums.readLines().findAll { line -> line.trim() }.collectEntries { line ->
        def parts = line.trim().split(/\s+/, 2)
        [parts[1].replaceFirst(/^\*/, ''), parts[0]]
    }
}

// The number of a translate shard file: `<stem>.<n>.nucleotide.fa` -> n (any number of digits);
// a single unsharded pair (`<stem>.nucleotide.fa`) is shard 1.
def shardIndex(String name, int count) {
    def match = name =~ /\.(\d+)\.(nucleotide|protein)\.fa$/
    return (count == 1 || !match.find()) ? 1 : match.group(1).toInteger()
}

// One [meta, nucleotide, protein] per shard pair of a TRANSLATE task, paired and ordered by shard
// number (numerically, so order and names hold past 99,999 shards). The shard meta is the sample's
// meta plus shardFields(): a name unique in the run (`<sample id>.<number>`, zero-padded to the
// widest number, at least 5 digits), the number and count, and the md5 of each file (the store's
// content keys).
def shardItems(meta, nucleotides, proteins, checksums) {
    def md5 = readChecksums(checksums)
    def nucleotide_files = [nucleotides].flatten()
    def count = nucleotide_files.size()
    def protein_files = [proteins].flatten().collectEntries { f -> [shardIndex(f.name, count), f] }
    def numbered = nucleotide_files.collect { nucleotide -> [shardIndex(nucleotide.name, count), nucleotide] }
        .sort { entry -> entry[0] }
    def width = Math.max(5, numbered[-1][0].toString().length())
    return numbered.collect { entry ->
        def (index, nucleotide) = entry
        def protein = protein_files[index]
        def shard_meta = meta + [shard: "${meta.id}.${index.toString().padLeft(width, '0')}".toString(),
                                 shard_index: index, shard_count: count,
                                 md5: [dnabert: md5[nucleotide.name], esm: md5[protein.name]]]
        [shard_meta, nucleotide, protein]
    }
}

def sampleMeta(shard_meta) {
    return shard_meta.findAll { key, value -> !(key in shardFields()) }
}

// The features of one shard are keyed by the store folders of the two embeddings they are merged
// from (those folders hold every key of the embeddings), digested into one name.
def featuresKey(dnabert, esm) {
    return md5Hex("${dnabert.parent}\n${esm.parent}".toString())
}

// md5 of a local model folder: every file's relative name and bytes, in name order (hidden
// files such as a hub download's .cache/ left out). The bytes are read once: the digest is kept
// in `cacheDir` under a key of the folder's path and every file's name, size and modification
// time, so later runs only list the folder (any file changed, added or removed: read again).
def folderDigest(folder, cacheDir) {
    def files = []
    folder.eachFileRecurse(groovy.io.FileType.FILES) { f -> files << f }
    def named = files.collect { f -> [folder.relativize(f).toString(), f] }
        .findAll { entry -> !entry[0].split('/').any { part -> part.startsWith('.') } }
        .sort { entry -> entry[0] }
    def listing = named.collect { entry ->
        "${entry[0]}\t${java.nio.file.Files.size(entry[1])}\t${java.nio.file.Files.getLastModifiedTime(entry[1]).toMillis()}"
    }.join('\n')
    def cached = cacheDir.resolve(md5Hex("${folder.toAbsolutePath()}\n${listing}".toString()) + '.md5')
    if (java.nio.file.Files.isRegularFile(cached)) {
        return cached.text.trim()
    }
    def digest = java.security.MessageDigest.getInstance('MD5')
    named.each { entry ->
        digest.update("${entry[0]}\n".toString().getBytes('UTF-8'))
        entry[1].withInputStream { stream -> stream.eachByte(1 << 20) { buffer, n -> digest.update(buffer, 0, n) } }
    }
    def hex = digest.digest().encodeHex().toString()
    // Written under a temporary name and renamed, so a concurrent run never reads half a digest.
    java.nio.file.Files.createDirectories(cacheDir)
    def temporary = java.nio.file.Files.createTempFile(cacheDir, '.digest.', '.tmp')
    temporary.text = hex
    java.nio.file.Files.move(temporary, cached, java.nio.file.StandardCopyOption.REPLACE_EXISTING)
    return hex
}

def isObjectStorage(String path) {
    return path ==~ /[a-z][a-z0-9+.-]*:\/\/.*/
}

// Where folderDigest keeps its digests: the store (local or shared file system), else the launch
// folder's .nextflow/ (a store in object storage).
def digestCache(store_dir, launch_dir) {
    def store = store_dir.toString()
    return isObjectStorage(store) ? file("${launch_dir}/.nextflow/virnucpro-digests") : file("${store}/digests")
}

// The store's compile-cache folder for torch.compile (see modules/extract.nf), or [] (no such
// input) when the store is object storage: tasks there compile in their own scratch space.
def compileCache(store_dir) {
    def store = store_dir.toString()
    if (isObjectStorage(store)) {
        return []
    }
    def folder = file("${store}/compile-cache")
    folder.mkdirs()
    return folder
}

// virnucpro-check runs before extraction in a test run (tiny models) that asks for a GPU.
def checkFirst(make_test_models, device) {
    return flag(make_test_models) && device.toString().startsWith('cuda')
}

def isLocalModel(String model) {
    return java.nio.file.Files.isDirectory(file(model))
}

def isCommit(String revision) {
    return revision ==~ /[0-9a-f]{40}/
}

// The store key of a hub model at a commit: `<id with / as -->@<commit>`.
def hubKey(String model, String commit) {
    return "${model.replace('/', '--')}@${commit}".toString()
}

// A boolean param, whether it came from a config file (true) or the command line ('true').
def flag(value) {
    return value.toString().toBoolean()
}

// [meta, fasta] per sample: rows of the --input samplesheet (validated by assets/schema_input.json),
// or one sample per file of --input_fasta (a path or glob; the sample id is the file's stem).
def samples(input, input_fasta) {
    if (input && input_fasta) {
        error "give either --input (a samplesheet) or --input_fasta (FASTA files), not both"
    }
    if (input) {
        return channel.fromList(samplesheetToList(input, "${projectDir}/assets/schema_input.json"))
    }
    if (input_fasta) {
        return channel.fromPath(input_fasta, checkIfExists: true).map { fasta -> [[id: fastaStem(fasta.name)], fasta] }
    }
    error "--input samplesheet.csv (columns sample,fasta) or --input_fasta 'contigs/*.fa' is required; see --help"
}

// The text of a version on the `versions` topic: a stored process gives a file (storeDir keeps
// only val and path outputs), the others the output of their eval command.
def versionText(version) {
    return (version instanceof java.nio.file.Path ? version.text : version.toString()).trim()
}

// software_versions.yml from the `versions` topic's [process, tool, version] entries: each
// process's tools in name order (two versions of one tool, e.g. embeddings stored by an older
// release, both listed), then the pipeline's and Nextflow's own under "Workflow".
def versionsYaml(entries, pipeline_version, nextflow_version) {
    def processes = entries.groupBy { entry -> entry[0] }.collectEntries { process, rows ->
        [process, rows.groupBy { row -> row[1] }.collectEntries { tool, found -> [tool, found.collect { row -> row[2] }.unique().sort().join(', ')] }]
    }
    processes['Workflow'] = [virnucpro: pipeline_version.toString(), Nextflow: nextflow_version.toString()]
    return processes.sort().collect { process, tools ->
        "\"${process}\":\n" + tools.sort().collect { tool, version -> "    ${tool}: ${version}" }.join('\n')
    }.join('\n') + '\n'
}
