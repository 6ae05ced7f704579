# The structural checks of src/disk_snapshots/schema.json, in Ruby, for the job templates.
#
# python -m localbosh.schema_blocks copies this file, with the job's part of the schema,
# between the markers of every jobs/*/templates/config.json.erb: templates are rendered
# from the job's own files (on the Director, and by the bosh CLI for create-env), so the
# checks travel inside them. It mirrors src/disk_snapshots/schema.py line for line, and
# spec/test_schema_agreement.py holds the two to the same messages.
#
# Only lambdas and local variables: a template must define no constant, class or method,
# because the Director renders every job of a deployment in one Ruby process.
# Ruby 2.7 and later (the Director's and any create-env machine's).
ds_check_properties = lambda do |schema, job, properties|
  definitions = schema['definitions']
  problems = []
  expected_of = { 'string' => 'a string', 'integer' => 'an integer', 'boolean' => 'true or false',
                  'array' => 'a list', 'object' => 'a map' }
  cron_names = %w[@yearly @annually @monthly @weekly @daily @midnight @hourly]
  cron_fields = [['minute', 0, 59], ['hour', 0, 23], ['day of month', 1, 31], ['month', 1, 12],
                 ['day of week', 0, 7], ['second', 0, 59]]
  cron_invalid = 'is not a valid cron expression (5 fields: minute hour day month weekday, or ' \
                 '@hourly/@daily/@weekly/@monthly/@yearly)'

  add = ->(path, message) { problems << "#{path}: #{message}" }
  show = lambda do |value|
    text = JSON.generate([value])[1..-2]
    text.length > 60 ? "#{text[0, 57]}..." : text
  end
  full = ->(pattern, text) { Regexp.new("\\A(?:#{pattern})\\z").match?(text) }
  type_name = lambda do |value|
    case value
    when nil then 'null'
    when true, false then 'a boolean'
    when Integer then 'an integer'
    when Float then 'a number'
    when String then 'a string'
    when Array then 'a list'
    when Hash then 'a map'
    else value.class.name
    end
  end
  is_type = lambda do |kind, value|
    case kind
    when 'string' then value.is_a?(String)
    when 'integer' then value.is_a?(Integer)
    when 'boolean' then [true, false].include?(value)
    when 'array' then value.is_a?(Array)
    when 'object' then value.is_a?(Hash)
    else false
    end
  end
  empty = ->(value) { value.nil? || value == '' || value == [] || value == {} }
  reach = lambda do |value, keys|
    keys.each do |key|
      return nil unless value.is_a?(Hash)

      value = value[key]
    end
    value
  end
  resolve = lambda do |raw|
    ref = raw['$ref']
    next raw if ref.nil?

    definitions[ref.sub('#/definitions/', '')].merge(raw.reject { |k, _| k == '$ref' })
  end
  cron_problem = lambda do |expression|
    if expression.start_with?('@')
      return cron_names.include?(expression) ? '' : "#{show.call(expression)} #{cron_invalid}"
    end

    fields = expression.split(/[ \t]+/, -1).reject(&:empty?)
    unless [5, 6].include?(fields.length)
      return "#{show.call(expression)} has #{fields.length} fields; use 5 (minute hour day month " \
             'weekday), 6 (the same plus seconds), or a name such as @hourly, @daily, @weekly'
    end

    fields.zip(cron_fields).each do |text, (name, low, high)|
      text.split(',', -1).each do |part|
        base, _, step = part.partition('/')
        return "#{show.call(expression)}: the #{name} step must be 1 or more" if full.call('[0-9]+', step) && step.to_i.zero?

        base.split('-', -1).each do |number|
          next unless full.call('[0-9]+', number) && !number.to_i.between?(low, high)

          return "#{show.call(expression)}: #{name} #{number.to_i} is not in #{low}-#{high}"
        end
      end
    end
    ''
  end

  check = nil
  check_string = lambda do |schema_, value, path|
    if schema_.key?('enum') && !schema_['enum'].include?(value)
      add.call(path, "#{show.call(value)} is not allowed; allowed: #{schema_['enum'].join(', ')}")
    elsif schema_.fetch('minLength', 0) > value.length
      add.call(path, 'must not be empty')
    elsif schema_.key?('maxLength') && value.length > schema_['maxLength']
      add.call(path, "is #{value.length} characters long; at most #{schema_['maxLength']}")
    elsif schema_.key?('pattern') && !full.call(schema_['pattern'], value)
      add.call(path, "#{show.call(value)} is not #{schema_['patternHint']}")
    elsif schema_['format'] == 'cron' && !value.empty? && cron_problem.call(value) != ''
      add.call(path, cron_problem.call(value))
    end
  end
  check_integer = lambda do |schema_, value, path|
    if schema_.key?('minimum') && value < schema_['minimum']
      add.call(path, "#{value} is too small; the minimum is #{schema_['minimum']}")
    elsif schema_.key?('maximum') && value > schema_['maximum']
      add.call(path, "#{value} is too large; the maximum is #{schema_['maximum']}")
    end
  end
  check_array = lambda do |schema_, value, path|
    seen = {}
    key = schema_['uniqueKey']
    value.each_with_index do |item, index|
      check.call(schema_['items'], item, "#{path}[#{index}]")
      named = key ? reach.call(item, [key]) : nil
      next unless named.is_a?(String)

      if seen.key?(named)
        add.call("#{path}[#{index}].#{key}",
                 "#{show.call(named)} is already used by #{seen[named]}; each #{key} must be unique")
      end
      seen[named] ||= "#{path}[#{index}]"
    end
  end
  check_rule = lambda do |rule, value, path|
    return if (rule['if'] || {}).any? { |k, v| reach.call(value, k.split('.')) != v }
    return if (rule['ifFilled'] || []).any? { |keys| empty.call(reach.call(value, keys)) }

    message = rule['message']
    add.call([path, *rule['refuse']].join('.'), message) if rule.key?('refuse')
    if rule.key?('nonEmpty') && empty.call(reach.call(value, rule['nonEmpty']))
      add.call([path, *rule['nonEmpty']].join('.'), message)
    end
    if rule.key?('together')
      filled = rule['together'].map { |keys| !empty.call(reach.call(value, keys)) }
      add.call([path, *rule['at']].join('.'), message) if filled.any? && !filled.all?
    end
    if rule.key?('differ')
      first, second = rule['differ'].map { |keys| reach.call(value, keys) }
      add.call([path, *rule['differ'][0]].join('.'), message) if !empty.call(first) && first == second
    end
  end
  check_object = lambda do |schema_, value, path|
    known = schema_['properties'] || {}
    known.each do |key, sub|
      present = value[key]
      if !present.nil?
        check.call(sub, present, "#{path}.#{key}")
      elsif (schema_['required'] || []).include?(key)
        check.call(sub, nil, "#{path}.#{key}")
      end
    end
    other = schema_.fetch('additionalProperties', false)
    names = schema_['propertyNames']
    value.keys.map(&:to_s).reject { |k| known.key?(k) }.sort.each do |key|
      item = value.key?(key) ? value[key] : value.find { |k, _| k.to_s == key }&.last
      if names && !full.call(names['pattern'], key)
        add.call("#{path}.#{key}", "#{show.call(key)} is not #{names['patternHint']}")
      elsif other == false
        add.call("#{path}.#{key}", "unknown key; allowed: #{known.keys.join(', ')}")
      elsif !item.nil?
        check.call(other, item, "#{path}.#{key}")
      end
    end
    (schema_['rules'] || []).each { |rule| check_rule.call(rule, value, path) }
  end
  check = lambda do |raw, value, path|
    schema_ = resolve.call(raw)
    kind = schema_['type']
    expected = schema_['format'] == 'argv' ? 'an argv list such as ["/path/to/cmd", "arg"]' : expected_of[kind]
    if value.nil?
      add.call(path, "is missing; expected #{expected}")
    elsif !is_type.call(kind, value)
      add.call(path, "expected #{expected}, got #{type_name.call(value)} #{show.call(value)}")
    elsif kind == 'string'
      check_string.call(schema_, value, path)
    elsif kind == 'integer'
      check_integer.call(schema_, value, path)
    elsif kind == 'array'
      check_array.call(schema_, value, path)
    elsif kind == 'object'
      check_object.call(schema_, value, path)
    end
  end

  check.call(schema['job'], properties, job)
  problems
end
